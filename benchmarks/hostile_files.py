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

``check_hostile(h, workdir)`` runs the package readers, the reference reader, ``pemn.load``,
``pemn inspect`` and ``pemn verify`` on one file with ``os.system``/``subprocess``/``importlib`` watched
and a marker module planted in ``workdir``; it returns what happened. Used by tests/test_hostile_files.py
and benchmarks/reliability.py.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import struct
import subprocess
import sys
import time
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

__all__ = ["Hostile", "build_hostile", "check_hostile", "make_vectors"]


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


def make_vectors():
    name = "pemn_make_vectors"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "formats" / "make_vectors.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _container(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def build_hostile() -> list[Hostile]:
    mv = make_vectors()
    cm = (VALID / "cm_onelayer_d50.pemn").read_bytes()  # registry architecture (test_convmixer)
    seq = (VALID / "seq_dense_raw_d50.pemn").read_bytes()  # no architecture reference (skeleton)
    rice = (VALID / "seq_onelayer_rice_d10.pemn").read_bytes()
    rp = (VALID / "seq_rp_copy.pemn").read_bytes()
    out: list[Hostile] = []

    def add(*args, **kwargs):
        out.append(Hostile(*args, **kwargs))

    # ---- code: import / call attempts
    touch = f"touch {MARKER}"
    for target, kwargs, what in (
        ("os:system", {"command": touch}, "os.system('touch ...')"),
        ("subprocess:run", {"args": ["touch", MARKER]}, "subprocess.run(['touch', ...])"),
        ("builtins:exec", {"source": f"open({MARKER!r}, 'w')"}, "exec(<code>)"),
        (f"{PLANTED_MODULE}:build", {}, "a module planted next to the file (its import creates the marker)"),
    ):
        e = mv.Edit(cm)
        e.header["architecture"] = {"kind": "import", "target": target, "kwargs": kwargs}
        add(
            f"import_{target.split(':')[0].split('_')[-1]}_{target.split(':')[1]}",
            "code",
            f"architecture kind 'import' of {what}, trust off",
            e.pack(),
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
        e = mv.Edit(cm)
        e.header["architecture"]["name"] = name
        add(
            f"registry_name_{''.join(ch if ch.isalnum() else '_' for ch in name).strip('_')}",
            "code",
            f"registry name {name!r} ({what})",
            e.pack(),
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
        e = mv.Edit(cm)
        e.header["architecture"]["kwargs"].update(kwargs)
        expected = "ShapeError" if label == "huge_dim" else "ModelError"
        add(f"registry_kwargs_{label}", "code", f"registry kwargs with {what}", e.pack(), "accepted", expected, message)

    # ---- size: rice masks claiming a huge decoded size
    add(
        "rice_empty_stream_2e31_weights",
        "size",
        "one Linear of 2**31 + 2**16 weights, empty rice stream (0 bytes)",
        mv._rice_layers(rice, [[1 << 16, (1 << 15) + 1]], strategy="dense"),
        "LimitError",
        "LimitError",
        "limit",
    )
    add(
        "rice_layer_over_2e34",
        "size",
        "one layer of 2**34 + 2**17 weights, 1 rice byte",
        mv._rice_layers(rice, [[1 << 17, (1 << 17) + 1]], ones=1, stream=b"\x00", strategy="dense"),
        "LimitError",
        "LimitError",
        "limit",
    )
    add(
        "rice_ones_1e9_two_bytes",
        "size",
        "a [40000, 40000] layer whose 2-byte rice stream claims 10**9 ones",
        mv._rice_layers(rice, [[40000, 40000]], ones=10**9, stream=b"\x00\x00", strategy="dense"),
        "ShapeError",
        "ModelError",
        "codewords need",
    )  # pemn.load refuses earlier: no architecture for layer 'l0'
    gap = 1_500_000_000  # one codeword with k = 40: 41 bits that place a one at weight 1.5e9
    bits = "0" + format(gap, "040b")
    bits += "0" * (-len(bits) % 8)
    stream = int(bits, 2).to_bytes(len(bits) // 8, "big")
    add(
        "rice_long_gap_over_limit",
        "size",
        "6 rice bytes placing a one at weight 1.5e9 of a 2.56e9-weight layer",
        mv._rice_layers(rice, [[50000, 51200]], ones=1, stream=stream, strategy="dense"),
        "LimitError",
        "LimitError",
        "limit",
    )

    # ---- text: escapes and markup (valid files) and inside an error message
    names = ["\x1b[31mred\x1b[0m", "\x1b]0;pwned\x07\u202eevil\u200b", "[bold red]markup[/]\r\x1b[2Kfake ok"]
    e = mv.Edit(seq)
    for layer, name in zip(e.header["layers"], names, strict=True):
        layer["name"] = name
    add(
        "ansi_layer_names",
        "text",
        "layer names with ANSI colour/OSC title/erase-line escapes, rich markup, bidi override",
        e.pack(),
        "accepted",
        "ModelError",
        "does not exist",
        skeleton="tiny_seq",
    )
    e = mv.Edit(cm)
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
        e.pack(),
        "accepted",
        "accepted",
    )
    e = mv.Edit(seq)
    e.header["layers"][0]["name"] = "\x1b[31mred\x1b[0m[blink]"
    e.header["layers"][0]["ones"] += 1
    add(
        "ansi_in_error_message",
        "text",
        "an escape-laden layer name inside a refusal message",
        e.pack(),
        "ShapeError",
        "ModelError",
        "kept weights",
        skeleton="tiny_seq",
    )

    # ---- not PEMN: valid safetensors
    w = np.arange(6, dtype=np.float32)
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
    add(
        "safetensors_pemn_without_header",
        "not-pemn",
        "format 'pemn', version 1, tensors named masks/dense.f32, no PEMN header",
        _container(
            {
                "__metadata__": {"format": "pemn", "pemn.version": "1"},
                "masks": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                "dense.f32": {"dtype": "F32", "shape": [6], "data_offsets": [8, 32]},
            },
            bytes(8) + w.tobytes(),
        ),
        "MissingKeyError",
        "MissingKeyError",
        "pemn.header",
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

    # ---- inconsistent header and tensors (data re-signed: the cross-checks must catch them)
    e = mv.Edit(seq)
    donor = mv.Edit(cm)
    e.tensors, e.streams = donor.tensors, donor.streams
    add(
        "header_of_another_file",
        "inconsistent",
        "seq_dense_raw_d50's PEMN header over cm_onelayer_d50's tensors, re-signed",
        e.pack(sync_masks=False),
        "ShapeError",
        "ShapeError",
        "masks",
    )
    e = mv.Edit(rp)
    e.tensors["values.0"] = e.tensors["values.0"].astype(np.float64)
    add(
        "values_tensor_float64",
        "inconsistent",
        "the stored value vector as F64",
        e.pack(),
        "ShapeError",
        "ShapeError",
        "values.0",
    )
    e = mv.Edit(seq)
    e.pack()
    e.tensors["masks"] = e.tensors["masks"].reshape(-1, 1)
    add(
        "masks_tensor_2d",
        "inconsistent",
        "the masks tensor with shape [n, 1]",
        e.pack(sync_masks=False),
        "ShapeError",
        "ShapeError",
        "masks",
    )
    e = mv.Edit(seq)
    e.tensors["dense.f32"] = e.tensors["dense.f32"].reshape(1, -1)
    add(
        "dense_group_2d",
        "inconsistent",
        "dense.f32 with shape [1, n]",
        e.pack(),
        "ShapeError",
        "ShapeError",
        "dense.f32",
    )
    e = mv.Edit(seq)
    layer = e.header["layers"][0]
    layer.update(codec="rice", rice_k=0, invert=False)  # a raw stream read as rice
    add(
        "raw_stream_declared_rice",
        "inconsistent",
        "a raw mask stream declared as rice (k 0): decodes, to other bits",
        e.pack(),
        "ChecksumError",
        "ChecksumError",
        "fingerprint",
        skeleton="tiny_seq",
    )
    for label, names in (("missing", ["blocks.9.3"]), ("not_a_string", [7])):
        e = mv.Edit(cm)
        e.header["dense"]["folded_batchnorm"] = names
        add(
            f"folded_batchnorm_{label}",
            "inconsistent",
            f"dense.folded_batchnorm naming {names[0]!r}, with no folded weight/bias entries in the table",
            e.pack(),
            "HeaderError",  # readers check folded names against the dense table (spec 11.2)
            "HeaderError",
            "folded_batchnorm",
        )
    entries, data = mv.container_entries(seq)
    order = sorted((n for n in entries if n != "__metadata__"), key=lambda n: entries[n]["data_offsets"])
    first, second = order[-2], order[-1]  # adjacent in the buffer: [first][second]
    (f0, f1), (_, s1) = entries[first]["data_offsets"], entries[second]["data_offsets"]
    swapped = json.loads(json.dumps(entries))
    swapped[second]["data_offsets"] = [f0, f0 + (s1 - f1)]  # still an exact tiling, same buffer (checksum intact) ...
    swapped[first]["data_offsets"] = [f0 + (s1 - f1), s1]  # ... but each entry now reads the other's bytes
    add(
        "container_offsets_swapped",
        "inconsistent",
        f"entries {first!r} and {second!r} pointing at each other's bytes (tiling and data checksum intact)",
        mv.raw_container(swapped, data),
        "ShapeError",
        "ShapeError",
        "mask of layer",
        skeleton="tiny_seq",
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

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from fuzz_loader import reference_reader
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    ref = reference_reader()
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
        started = time.perf_counter()
        read, read_msg = _outcome(package)
        read_seconds = time.perf_counter() - started
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
        "read": read,
        "reference": reference,
        "load": load,
        "messages": errors,
        "expected_read": h.read,
        "expected_load": h.load,
        "message": h.message,
        "read_is_pemn_error": read == "accepted" or read in pemn_errors,
        "load_is_pemn_error": load == "accepted" or load in pemn_errors,
        "reference_agrees": (read == "accepted") == (reference == "accepted"),
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
