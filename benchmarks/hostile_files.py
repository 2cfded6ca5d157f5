"""Hand-made hostile `.pemn` files, beyond formats/vectors/invalid: the corpus the reliability campaign and
tests/test_hostile_files.py give to the readers, ``pemn.load`` and the CLI.

    PYTHONPATH=. python benchmarks/hostile_files.py --write DIR     # DIR/<name>.pemn and DIR/hostile.json

``build_hostile()`` returns ``Hostile`` files in six groups:

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
* **v3-q8**: format version 3's int8 leftovers (formats/pemn-v3.md): q8 rows declaring 65,536 values (one, and
  a thousand of them) over the few codes of a 1.6 KB file, a row declaring 65,536 outliers, an outlier
  position far past its row (what a decoder scattering values without the check would write out of bounds).
  Refused with the right class within ``SMALL_PEAK`` traced bytes: nothing of the declared size decoded.

The code, size, text and inconsistent groups exist in both format versions (version 2 names end in
``_v2``): every file is made by editing a valid vector (written by the package) with
benchmarks/fuzz_loader.py's file model, which unpacks, edits, repacks and re-signs files of either
version with struct, json, zlib and hashlib only (``edit``, ``base_file``).

Each file carries the outcome its author expects (``read``, ``load``, ``message``); ``--write`` puts them
in the manifest ``hostile.json``. What the package does with the files is checked by
tests/support/hostile.py (the tests, and ``benchmarks/reliability.py`` through ``python -m support.hostile``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import struct
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):  # run as a script or imported by another benchmark
    if _path not in sys.path:
        sys.path.insert(0, _path)

import fuzz_loader as fz  # noqa: E402
import numpy as np  # noqa: E402

VALID = ROOT / "formats" / "vectors" / "valid"
VALID_V3 = ROOT / "formats" / "vectors" / "v3" / "valid"
MARKER = "pemn-hostile-executed"  # a file that exists only if some hostile code ran
PLANTED_MODULE = "pemn_hostile_module"  # importing it creates MARKER
SMALL_PEAK = 4 << 20  # what reading a hostile v2 file may allocate at most (traced): nothing it merely declares
MANIFEST = "hostile.json"

__all__ = ["Hostile", "base_file", "build_hostile", "edit", "write_corpus"]


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


def _container(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def edit(blob: bytes):
    """A valid file (either version) to edit: ``.header``, ``.metadata``, ``.tensors`` (name -> [dtype,
    shape, bytes]), the version 2 hooks; ``.encode()`` repacks and re-signs it."""
    return fz.Candidate.from_blob(blob)


def base_file(name: str, version: int = 1) -> bytes:
    """Valid vector ``name`` (written by the package, version 1), re-laid out as ``version``."""
    blob = (VALID / f"{name}.pemn").read_bytes()
    return blob if version == 1 else fz.to_version(blob, version)


def _rice_layers(base: bytes, shapes: list[list[int]], *, ones: int = 0, stream: bytes = b"") -> bytes:
    """A consistent file (strategy ``dense``) whose layers are Linear with the given shapes and rice masks
    (``ones``, ``stream``); version 2 leaves the derived keys (banks, bank, scale) out."""
    e = edit(base)
    e.header["config"].update(strategy="dense", ratio=None, learn_values=False, rescale=True)
    e.header["layers"] = [
        {"name": f"l{i}", "type": "Linear", "shape": s, "codec": "rice", "ones": ones, "rice_k": 0, "invert": False,
         "bytes": len(stream)}
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
        bases = {
            "cm": base_file("cm_onelayer_d50", version),  # registry architecture (test_convmixer)
            "seq": base_file("seq_dense_raw_d50", version),  # no architecture reference (skeleton)
            "rice": base_file("seq_onelayer_rice_d10", version),
            "rp": base_file("seq_rp_copy", version),
        }
        group = _code_imports(bases) + _code_registry(bases) + _size(bases) + _text(bases) + _inconsistent(bases)
        if version == 1:  # version 2 lays the header tensor out between dense.f32 and masks: no adjacent pair
            group.append(_container_offsets_swapped(bases["seq"]))
        suffix = "" if version == 1 else f"_v{version}"
        out += [Hostile(h.name + suffix, *list(asdict(h).values())[1:]) for h in group]
    return out + _not_pemn() + _v2_declared() + _v2_header_tensor() + _v2_stream() + _v2_labels() + _v3_q8()


# ---------------------------------------------------------------------------------------------- code
def _code_imports(bases: dict) -> list[Hostile]:
    """Architecture kind ``import`` of functions that run code, and of a planted module; trust off."""
    touch = f"touch {MARKER}"
    out = []
    for target, kwargs, what in (
        ("os:system", {"command": touch}, "os.system('touch ...')"),
        ("subprocess:run", {"args": ["touch", MARKER]}, "subprocess.run(['touch', ...])"),
        ("builtins:exec", {"source": f"open({MARKER!r}, 'w')"}, "exec(<code>)"),
        (f"{PLANTED_MODULE}:build", {}, "a module planted next to the file (its import creates the marker)"),
    ):
        e = edit(bases["cm"])
        e.header["architecture"] = {"kind": "import", "target": target, "kwargs": kwargs}
        name = f"import_{target.split(':')[0].split('_')[-1]}_{target.split(':')[1]}"
        out.append(Hostile(name, "code", f"architecture kind 'import' of {what}, trust off", e.encode(), "accepted",
                           "TrustError", "trust_code"))
    return out


def _code_registry(bases: dict) -> list[Hostile]:
    """Registry names that are not model names, and registry kwargs that smuggle objects or code."""
    out = []
    for name, what in (
        ("__import__", "the builtin __import__"),
        ("os.system", "a dotted callable"),
        ("builtins:eval", "a module:function spelled as a name"),
        ("../../etc/passwd", "a path"),
    ):
        e = edit(bases["cm"])
        e.header["architecture"]["name"] = name
        label = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
        out.append(Hostile(f"registry_name_{label}", "code", f"registry name {name!r} ({what})", e.encode(),
                           "accepted", "UnknownModelError", "unknown model"))
    for label, kwargs, message, what in (
        ("name", {"name": "os"}, "unknown argument 'name'", "a 'name' argument colliding with create_model(name, ...)"),
        ("reduce", {"dim": {"__reduce__": ["os.system", [f"touch {MARKER}"]]}}, "JSON value",
         "a pickle-style __reduce__ object"),
        ("code_string", {"dim": "__import__('os').system('touch x')"}, "expected an integer",
         "a code string as a size"),
        ("dunder", {"__class__": "os.system"}, "unknown argument", "a __class__ argument"),
        ("huge_dim", {"dim": 1 << 20}, "", "dim 2**20: a 2**40-weight 1x1 conv if it were built for real"),
    ):
        e = edit(bases["cm"])
        e.header["architecture"]["kwargs"].update(kwargs)
        expected = "ShapeError" if label == "huge_dim" else "ModelError"
        out.append(Hostile(f"registry_kwargs_{label}", "code", f"registry kwargs with {what}", e.encode(), "accepted",
                           expected, message))
    return out


# ---------------------------------------------------------------------------------------------- size
def _size(bases: dict) -> list[Hostile]:
    """Rice masks claiming a huge decoded size with a few bytes."""
    rice = bases["rice"]
    gap = 1_500_000_000  # one codeword with k = 40: 41 bits that place a one at weight 1.5e9
    bits = "0" + format(gap, "040b")
    bits += "0" * (-len(bits) % 8)
    long_gap = edit(_rice_layers(rice, [[50000, 51200]], ones=1, stream=int(bits, 2).to_bytes(len(bits) // 8, "big")))
    long_gap.header["layers"][0]["rice_k"] = 40
    return [
        Hostile("rice_empty_stream_2e31_weights", "size",
                "one Linear of 2**31 + 2**16 weights, empty rice stream (0 bytes)",
                _rice_layers(rice, [[1 << 16, (1 << 15) + 1]]), "LimitError", "LimitError", "limit"),
        Hostile("rice_layer_over_2e34", "size", "one layer of 2**34 + 2**17 weights, 1 rice byte",
                _rice_layers(rice, [[1 << 17, (1 << 17) + 1]], ones=1, stream=b"\x00"), "LimitError", "LimitError",
                "limit"),
        Hostile("rice_ones_1e9_two_bytes", "size", "a [40000, 40000] layer whose 2-byte rice stream claims 10**9 ones",
                _rice_layers(rice, [[40000, 40000]], ones=10**9, stream=b"\x00\x00"), "ShapeError",
                "ModelError", "codewords need"),  # pemn.load refuses earlier: no architecture for layer 'l0'
        Hostile("rice_long_gap_over_limit", "size",
                "6 rice bytes placing a one at weight 1.5e9 of a 2.56e9-weight layer", long_gap.encode(), "LimitError",
                "LimitError", "limit"),
    ]


# ---------------------------------------------------------------------------------------------- text
def _text(bases: dict) -> list[Hostile]:
    """Escapes and markup in valid files, and inside an error message."""
    names = ["\x1b[31mred\x1b[0m", "\x1b]0;pwned\x07\u202eevil\u200b", "[bold red]markup[/]\r\x1b[2Kfake ok"]
    layers = edit(bases["seq"])
    for layer, name in zip(layers.header["layers"], names, strict=True):
        layer["name"] = name
    provenance = edit(bases["cm"])
    provenance.header["provenance"] = {
        "dataset": "\x1b[2J\x1b[H[link=file:///etc/passwd]click[/link]",
        "accuracy": "\x1b[5m99.9%",
        "recipe": {"\x1b[31mkey": "\x07\x08\x7f"},
        "note": "[red]not red[/red] \u009b31m",
    }
    provenance.header["producer"] = {"name": "\x1b[32mpemn-compress", "version": "\x1b[0m9.9\r"}
    provenance.metadata["\x1b[31mextra"] = "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"
    refused = edit(bases["seq"])
    refused.header["layers"][0]["name"] = "\x1b[31mred\x1b[0m[blink]"
    refused.header["layers"][0]["ones"] += 1
    return [
        Hostile("ansi_layer_names", "text",
                "layer names with ANSI colour/OSC title/erase-line escapes, rich markup, bidi override",
                layers.encode(), "accepted", "ModelError", "does not exist", skeleton="tiny_seq"),
        Hostile("ansi_provenance_producer_metadata", "text",
                "provenance, producer and an extra metadata key with escapes/markup", provenance.encode(), "accepted",
                "accepted"),
        Hostile("ansi_in_error_message", "text", "an escape-laden layer name inside a refusal message",
                refused.encode(), "ShapeError", "ModelError", "kept weights", skeleton="tiny_seq"),
    ]


# ---------------------------------------------------------------------------------------------- inconsistent
def _inconsistent(bases: dict) -> list[Hostile]:
    """PEMN headers that disagree with the tensors (data re-signed: the cross-checks must catch them)."""
    seq, cm = bases["seq"], bases["cm"]
    other = edit(seq)
    donor = edit(cm)
    other.tensors, other.order = donor.tensors, donor.order
    f64 = edit(bases["rp"])
    values = np.frombuffer(f64.tensors["values.0"][2], "<f4")
    f64.tensors["values.0"] = ["F64", [values.size], values.astype("<f8").tobytes()]
    masks_2d = edit(seq)
    masks_2d.tensors["masks"][1] = [len(masks_2d.tensors["masks"][2]), 1]
    dense_2d = edit(seq)
    dense_2d.tensors["dense.f32"][1] = [1, len(dense_2d.tensors["dense.f32"][2]) // 4]
    as_rice = edit(seq)
    layer = as_rice.header["layers"][0]
    layer.update(codec="rice", rice_k=0, invert=False, bytes=fz.layer_bytes(layer))  # a raw stream read as rice
    out = [
        Hostile("header_of_another_file", "inconsistent",
                "seq_dense_raw_d50's PEMN header over cm_onelayer_d50's tensors, re-signed", other.encode(),
                "ShapeError", "ShapeError", "masks"),
        Hostile("values_tensor_float64", "inconsistent", "the stored value vector as F64", f64.encode(), "ShapeError",
                "ShapeError", "values.0"),
        Hostile("masks_tensor_2d", "inconsistent", "the masks tensor with shape [n, 1]", masks_2d.encode(),
                "ShapeError", "ShapeError", "masks"),
        Hostile("dense_group_2d", "inconsistent", "dense.f32 with shape [1, n]", dense_2d.encode(), "ShapeError",
                "ShapeError", "dense.f32"),
        Hostile("raw_stream_declared_rice", "inconsistent",
                "a raw mask stream declared as rice (k 0): decodes, to other bits", as_rice.encode(), "ChecksumError",
                "ChecksumError", "fingerprint", skeleton="tiny_seq"),
    ]
    for label, names in (("missing", ["blocks.9.3"]), ("not_a_string", [7])):
        e = edit(cm)
        e.header["dense"]["folded_batchnorm"] = names
        what = f"dense.folded_batchnorm naming {names[0]!r}, with no folded weight/bias entries in the table"
        out.append(Hostile(f"folded_batchnorm_{label}", "inconsistent", what, e.encode(),
                           "HeaderError", "HeaderError", "folded_batchnorm"))  # readers check folded names (spec 11.2)
    return out


def _container_offsets_swapped(seq: bytes) -> Hostile:
    """Two adjacent entries pointing at each other's bytes (tiling and data checksum intact)."""
    (n,) = struct.unpack("<Q", seq[:8])
    entries, data = json.loads(seq[8 : 8 + n]), seq[8 + n :]
    order = sorted((n for n in entries if n != "__metadata__"), key=lambda n: entries[n]["data_offsets"])
    first, second = order[-2], order[-1]  # adjacent in the buffer: [first][second]
    (f0, f1), (_, s1) = entries[first]["data_offsets"], entries[second]["data_offsets"]
    swapped = json.loads(json.dumps(entries))
    swapped[second]["data_offsets"] = [f0, f0 + (s1 - f1)]  # still an exact tiling, same buffer (checksum) ...
    swapped[first]["data_offsets"] = [f0 + (s1 - f1), s1]  # ... but each entry now reads the other's bytes
    return Hostile("container_offsets_swapped", "inconsistent",
                   f"entries {first!r} and {second!r} pointing at each other's bytes (tiling and data checksum intact)",
                   _container(swapped, data), "ShapeError", "ShapeError", "mask of layer", skeleton="tiny_seq")


# ---------------------------------------------------------------------------------------------- not-pemn
def _not_pemn() -> list[Hostile]:
    """Valid safetensors files that are not PEMN files (no PEMN header to speak of: one version)."""
    w = np.arange(6, dtype=np.float32)
    entry = {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}
    out = [
        Hostile("safetensors_no_metadata", "not-pemn", "a safetensors file without __metadata__",
                _container({"weight": entry}, w.tobytes()), "HeaderError", "HeaderError", "not a .pemn file"),
        Hostile("safetensors_format_pt", "not-pemn", "a torch safetensors file (format 'pt')",
                _container({"__metadata__": {"format": "pt"}, "weight": entry}, w.tobytes()), "HeaderError",
                "HeaderError", "not a .pemn file"),
    ]
    for version, key in ((1, "pemn.header"), (2, "pemn.header_bytes")):
        entries = {
            "__metadata__": {"format": "pemn", "pemn.version": str(version)},
            "masks": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
            "dense.f32": {"dtype": "F32", "shape": [6], "data_offsets": [8, 32]},
        }
        out.append(Hostile("safetensors_pemn_without_header" + ("" if version == 1 else "_v2"), "not-pemn",
                           f"format 'pemn', version {version}, tensors named masks/dense.f32, no PEMN header",
                           _container(entries, bytes(8) + w.tobytes()), "MissingKeyError", "MissingKeyError", key))
    many = {f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(100_001)}
    out.append(Hostile("safetensors_100001_tensors", "not-pemn",
                       "100,001 zero-length tensors (over MAX_TENSORS), a 5.7 MB header", _container(many),
                       "LimitError", "LimitError", "tensors", heavy=True))
    out.append(Hostile("safetensors_pickle_bytes", "not-pemn", "a pickle (torch.save) where a .pemn file is expected",
                       b"\x80\x02\x63os\nsystem\nq\x00X\x05\x00\x00\x00touchq\x01\x85q\x02Rq\x03.", "LimitError",
                       "LimitError", "header claims"))
    return out


# ---------------------------------------------------------------------------------------------- v2-header
# Version 2's header block (formats/pemn-v2.md sections 2, 3 and 6): declared sizes, inflation bombs,
# header tensors of the wrong kind, streams that are not one raw DEFLATE stream, the version label against
# the layout, derived keys that disagree. Each small on disk; those that declare or hide a large size are
# refused within SMALL_PEAK bytes of traced allocation (before allocating it).
def _v2(name, description, blob, read, load, message, *, peak=SMALL_PEAK, skeleton="tiny_seq") -> Hostile:
    return Hostile(name, "v2-header", description, blob, read, load, message, skeleton, max_peak=peak)


def _v2_file(stream=None, header_bytes=None, **attrs):
    """seq_dense_raw_d50 as version 2, to edit: ``stream`` makes the header stream from the text,
    ``header_bytes`` is the ``pemn.header_bytes`` value to state, ``attrs`` set Candidate hooks."""
    e = edit(base_file("seq_dense_raw_d50", 2))
    if stream is not None:
        e.header_stream = stream
    if header_bytes is not None:
        e.header_bytes_edit = lambda n: header_bytes
    for key, value in attrs.items():
        setattr(e, key, value)
    return e


def _bomb(size: int):
    """The header text, then ``size`` zero bytes: one valid stream, far longer than declared."""
    return lambda t: fz.deflate_raw(t, final=False) + fz.zero_bomb(size)


def _v2_declared() -> list[Hostile]:
    """Inflation bombs and ``pemn.header_bytes`` values: what the file declares against what it holds."""
    return [
        _v2("v2_inflation_bomb_declared_small",
            "a 64 KB header stream inflating to the 1 KB header then 64 MiB of zeros; pemn.header_bytes: the 1 KB",
            _v2_file(_bomb(64 << 20)).encode(), "HeaderError", "HeaderError", "inflates to more than"),
        _v2("v2_inflation_bomb_zeros_only", "a 16 KB stream of 16 MiB of zeros (no JSON at all) where a 1 KB header "
            "is declared", _v2_file(lambda t: fz.zero_bomb()).encode(), "HeaderError", "HeaderError",
            "inflates to more than"),
        _v2("v2_header_bytes_999999999",
            "pemn.header_bytes 999999999 (over MAX_HEADER_BYTES) over a 64 MiB inflation bomb: refused before "
            "inflating",
            _v2_file(_bomb(64 << 20), "999999999").encode(), "LimitError", "LimitError", "999999999"),
        _v2("v2_header_bytes_max_small_stream",
            "pemn.header_bytes 104857600 (the limit) over the real 1 KB stream: nothing of the declared size allocated",
            _v2_file(header_bytes=str(fz.MAX_HEADER_BYTES)).encode(), "HeaderError", "HeaderError",
            "declares 104857600"),
        _v2("v2_header_bytes_ten_digits", "pemn.header_bytes '0000001039': ten digits (the spec allows 1 to 9)",
            _v2_file(header_bytes="0000001039").encode(), "HeaderError", "HeaderError", "pemn.header_bytes"),
        _v2("v2_header_bytes_off_by_one", "pemn.header_bytes one less than the inflated header",
            _v2_file(header_bytes_edit=lambda n: str(n - 1)).encode(), "HeaderError", "HeaderError",
            "inflates to more than"),
    ]


def _v2_header_tensor() -> list[Hostile]:
    """The ``header`` tensor's entry, dtype and shape, and a version 1 file that has one."""
    claims = _v2_file()
    claims.entry_edits.append(lambda entries: entries["header"].update(shape=[100 << 20]))
    claims.entry_edits.append(lambda entries: entries["header"].update(
        data_offsets=[entries["header"]["data_offsets"][0], entries["header"]["data_offsets"][0] + (100 << 20)]))
    missing = _v2_file()
    del missing.tensors["header"]
    f32 = _v2_file()
    f32.tensors["header"][0] = "F32"
    two_d = _v2_file()
    two_d.tensors["header"][1] = lambda n: [1, n]
    v1 = edit(base_file("seq_dense_raw_d50"))
    stream = fz.deflate_raw(b"{}")
    v1.tensors["header"] = ["U8", [len(stream)], stream]
    v1.add_to_order("header")
    return [
        _v2("v2_header_tensor_claims_100MiB", "the header tensor's entry claims 100 MiB of U8 (shape and offsets) in "
            "a 1 KB file", claims.encode(), "ContainerError", "ContainerError", ""),
        _v2("v2_header_tensor_missing", "no header tensor", missing.encode(), "ShapeError", "ShapeError",
            "'header' is missing"),
        _v2("v2_header_tensor_f32", "the header stream typed F32 (padded to 4 bytes)", f32.encode(), "ShapeError",
            "ShapeError", "1-D uint8"),
        _v2("v2_header_tensor_2d", "the header tensor of shape [1, n]", two_d.encode(), "ShapeError", "ShapeError",
            "1-D uint8"),
        _v2("v1_file_with_header_tensor", "a complete version 1 file with an extra 'header' tensor", v1.encode(),
            "HeaderError", "HeaderError", "tensors not described"),
    ]


def _v2_stream() -> list[Hostile]:
    """Header streams that are not one raw DEFLATE stream of the signed text."""
    streams: list[bytes] = []
    of_stream = _v2_file(header_stream_edits=[lambda s, t: streams.append(s) or s])
    of_stream.encode()
    of_stream.sign_header = False
    of_stream.metadata["pemn.header_sha256"] = hashlib.sha256(streams[0]).hexdigest()
    nested = b'{"a":' + b"[" * (1 << 20) + b"]" * (1 << 20) + b"}"
    return [
        _v2("v2_header_trailing_byte", "one zero byte after the final DEFLATE block",
            _v2_file(header_stream_edits=[lambda s, t: s + b"\x00"]).encode(), "HeaderError", "HeaderError",
            "after its final"),
        _v2("v2_header_truncated", "the header stream cut by one byte",
            _v2_file(header_stream_edits=[lambda s, t: s[:-1]]).encode(), "HeaderError", "HeaderError", ""),
        _v2("v2_header_zlib_wrapped", "the header as a zlib stream (2-byte header, Adler-32) instead of raw DEFLATE",
            _v2_file(lambda t: zlib.compress(t, 9)).encode(), "HeaderError", "HeaderError", ""),
        _v2("v2_header_no_final_block", "the header as hand-made stored blocks, none of them final",
            _v2_file(lambda t: fz.stored_stream(t, (100,), final=False)).encode(), "HeaderError", "HeaderError",
            "cut short"),
        _v2("v2_header_sha256_of_stream", "pemn.header_sha256 of the deflated stream instead of the text",
            of_stream.encode(), "ChecksumError", "ChecksumError", "header checksum"),
        _v2("v2_header_nested_brackets",
            "a 2 KB stream inflating to 2 MiB of nested brackets (depth 2**20), hashed and declared",
            _v2_file(header_raw_edits=[lambda t: nested]).encode(), "HeaderError", "HeaderError", "", peak=16 << 20),
    ]


def _v2_labels() -> list[Hostile]:
    """The version label against the layout, and derived keys stated against what they derive to."""
    as_v1 = _v2_file()
    as_v1.metadata["pemn.version"] = "1"
    stray = _v2_file()
    stray.metadata["pemn.header"] = fz.canonical_json(edit(base_file("cm_onelayer_d50")).header)
    bank, minus_one, generator = _v2_file(), _v2_file(), _v2_file()
    bank.header["layers"][1]["bank"] = 0
    minus_one.header["layers"][1]["bank"] = -1
    generator.header["generator"] = {"name": "philox4x32-10", "seed": generator.header["config"]["seed"] + 1}
    return [
        _v2("v2_file_labelled_v1", "a version 2 file labelled pemn.version '1'", as_v1.encode(), "MissingKeyError",
            "MissingKeyError", "pemn.header"),
        _v2("v2_stray_v1_header",
            "a version 2 file also holding another file's header in pemn.header (ignored: the file is valid)",
            stray.encode(), "accepted", "accepted", ""),
        _v2("v2_derived_bank_conflict", "layer 1 stating bank 0 where strategy 'dense' derives bank 1", bank.encode(),
            "HeaderError", "HeaderError", "bank must be 1"),
        _v2("v2_derived_bank_minus_one",
            "layer 1 stating bank -1 where 'dense' derives bank 1 (-1 was once the reader's own 'left out' mark)",
            minus_one.encode(), "HeaderError", "HeaderError", "bank must be 1"),
        _v2("v2_derived_generator_conflict", "a generator whose seed differs from config.seed", generator.encode(),
            "HeaderError", "HeaderError", "generator.seed"),
    ]


# ---------------------------------------------------------------------------------------------- v3-q8
def _v3_q8() -> list[Hostile]:
    """Version 3's q8 rows declaring far more than the file holds (formats/pemn-v3.md sections 2 to 4), made
    from the committed int8 vector cm_mp_folded_int8_outliers (registry test_convmixer, 1.6 KB)."""
    base = (VALID_V3 / "cm_mp_folded_int8_outliers.pemn").read_bytes()

    def q8_file(change):
        e = edit(base)
        change(e.header["dense"]["tensors"], [item for item in e.header["dense"]["tensors"] if fz.is_q8_row(item)])
        return e.encode()

    def one_row(table, q8):
        q8[0][1:] = [[fz.Q8_MAX_VALUES], "q8", 0]

    def thousand_rows(table, q8):
        table += [[f"extra.{i}", [fz.Q8_MAX_VALUES], "q8", 0] for i in range(1000)]

    def all_outliers(table, q8):
        q8[0][1:] = [[fz.Q8_MAX_VALUES], "q8", fz.Q8_MAX_VALUES]

    far = edit(base)
    rows = fz.dense_rows(far)
    row = next(r for r in rows if r.group == fz.Q8_GROUP and r.positions.size)
    row.positions[-1] = 0xFFFF  # the row has 16 values
    fz.set_dense_rows(far, rows)

    def v3(name, description, blob, read, message):
        return Hostile(name, "v3-q8", description, blob, read, read, message, None, max_peak=SMALL_PEAK)

    return [
        v3("v3_q8_row_65536_values_tiny_file",
           "a q8 row of 16 values declaring 65,536 (the most a row may hold), its 16 codes stored: 1.6 KB",
           q8_file(one_row), "ShapeError", "dense.q8"),
        v3("v3_q8_1000_rows_of_65536_values",
           "1,000 extra q8 rows of 65,536 values each (65.5 M values, 262 MB decoded) over the file's 155 codes",
           q8_file(thousand_rows), "ShapeError", "dense.q8"),
        v3("v3_q8_65536_outliers",
           "a q8 row declaring 65,536 values, all of them outliers (128 KB of positions and values), none stored",
           q8_file(all_outliers), "ShapeError", "dense.q8"),
        v3("v3_q8_outlier_position_65535",
           "an outlier at position 65,535 of a 16-value q8 row, every length consistent (row 23b)",
           far.encode(), "ShapeError", "outlier positions"),
    ]


# ---------------------------------------------------------------------------------------------- writing
def write_corpus(folder: Path) -> list[Hostile]:
    """Every hostile file as ``folder/<name>.pemn``, and the manifest ``folder/hostile.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = build_hostile()
    for h in files:
        (folder / f"{h.name}.pemn").write_bytes(h.blob)
    entries = [{k: v for k, v in asdict(h).items() if k != "blob"} for h in files]
    manifest = {"marker": MARKER, "planted_module": PLANTED_MODULE, "files": entries}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, required=True, metavar="DIR", help="write the corpus and its manifest")
    args = parser.parse_args(argv)
    files = write_corpus(args.write)
    print(f"wrote {len(files)} hostile files and {MANIFEST} to {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
