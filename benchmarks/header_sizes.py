"""How many bytes the `.pemn` header costs, and what a compact header could save (format v2 input).

This is the input study of format version 2 (formats/pemn-v2.md section 9), so it writes version 1
files (``--format-version 1``); ``benchmarks/sizes.py`` measures both versions on the same masks.
A `.pemn` v1 file stores its PEMN header as canonical JSON inside the safetensors ``__metadata__``
(a JSON string inside JSON, so every quote is escaped), next to the safetensors tensor table. For
small models this header is a large share of the file. This benchmark writes real files with
``pemn compress`` (a short run: the header does not depend on how long the masks trained), then
measures, for each file, the bytes of each header part and of candidate encodings:

- ``v1``: the safetensors header as written (8-byte length + JSON with the escaped PEMN header);
- ``raw JSON``: the same canonical JSON stored unescaped (for example as a U8 tensor);
- ``deflate``: canonical JSON compressed with zlib (level 9, raw deflate), stored as a U8 tensor;
- ``deflate+b64``: the same, base64 in a metadata string (keeps it in ``__metadata__``);
- ``derived dropped``: canonical JSON without what a reader can recompute: the bank table (section 9
  derives it from ``config`` and the shapes), Kaiming scales equal to the writer's rule, per-layer
  ``bytes`` of ``raw`` layers (``ceil(n / 8)``), the producer, and the layer names/types/shapes and the
  dense table's keys/shapes when the architecture reference rebuilds them (``registry`` files);
- ``derived dropped + deflate``: both;
- ``binary layer table``: the layer records as fixed little-endian fields (codec, invert, rice_k,
  ones, bytes as varints) instead of JSON objects, rest as deflated JSON.

Each candidate counts what it must still store for the safetensors tensor entries it adds (the JSON
entry of one more U8 tensor). Every candidate is decoded back and compared with the original header
(a lossless check; the derived-dropped ones compare after recomputing what they dropped from the
skeleton, which this benchmark does with the package's own plan).

Run (about 2 minutes on one core):

    PYTHONPATH=. python benchmarks/header_sizes.py --out benchmarks/results/header_sizes.md
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Two models users bring: a 5-layer CNN with BatchNorm (36k masked weights) and a 131k-parameter CNN.
USER_MODELS = '''
from torch import nn


class Small(nn.Module):
    """5 masked layers, 36k masked weights, BatchNorm after every conv."""

    def __init__(self, num_classes=10):
        super().__init__()
        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
        self.features = nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                                      *block(32, 48), *block(48, 48), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(48, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class Medium(nn.Module):
    """A 131k-parameter CNN: 3 conv stages with BatchNorm and a two-layer head."""

    def __init__(self, num_classes=10):
        super().__init__()
        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
        self.features = nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64),
                                      *block(64, 64), nn.MaxPool2d(2), *block(64, 96), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.head = nn.Sequential(nn.Linear(96, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.head(self.features(x))
'''

MODELS = (
    ("user: 5-layer CNN (Small)", "usermodels:Small"),
    ("user: 131k CNN (Medium)", "usermodels:Medium"),
    ("mlp_3", "mlp_3"),
    ("convmixer_64_4", "convmixer_64_4"),
    ("convmixer_128_4", "convmixer_128_4"),
    ("resnet20", "resnet20"),
)


# ------------------------------------------------------------------------------------------ files
def write_files(work: Path, seed: int) -> list[tuple[str, Path]]:
    """One real `.pemn` file per model, written by the CLI as a user runs it (a short run)."""
    (work / "usermodels.py").write_text(USER_MODELS)
    files = []
    for label, model in MODELS:
        out = work / (model.replace(":", "_") + ".pemn")
        if not out.exists():
            cmd = [
                sys.executable,
                "-m",
                "pemn_compress",
                "compress",
                model,
                "--epochs",
                "1",
                "--max-train-samples",
                "300",
                "--threads",
                "1",
                "--seed",
                str(seed),
                "--output",
                str(out),
                "--format-version",  # the study behind format version 2: it measures version 1 headers
                "1",
            ]
            subprocess.run(cmd, cwd=work, check=True, capture_output=True, text=True)
        files.append((label, out))
    return files


def read_container(path: Path) -> tuple[int, dict, dict]:
    """(safetensors header bytes incl. the 8-byte length, its JSON, the PEMN header object)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    table = json.loads(data[8 : 8 + n])
    return 8 + n, table, json.loads(table["__metadata__"]["pemn.header"])


# ------------------------------------------------------------------------------------- encodings
def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return packer.compress(data) + packer.flush()


def inflate(data: bytes) -> bytes:
    return zlib.decompress(data, -15)


def tensor_entry_bytes(name: str, length: int, offset: int) -> int:
    """Bytes one more U8 tensor adds to the safetensors JSON table."""
    entry = {name: {"dtype": "U8", "shape": [length], "data_offsets": [offset, offset + length]}}
    return len(json.dumps(entry, separators=(",", ":"))) - 2 + 1  # without braces, plus a comma


def kaiming(shape: list[int]) -> float:
    import numpy as np

    return float(np.float32(math.sqrt(2.0 / max(1, math.prod(shape[1:])))))


def drop_derived(header: dict) -> dict:
    """The header without what a reader recomputes from config, shapes and the architecture reference."""
    slim = json.loads(json.dumps(header))
    slim.pop("banks")
    slim.pop("producer")
    rebuilt = slim["architecture"].get("kind") == "registry"
    for layer in slim["layers"]:
        if layer["scale"] == kaiming(layer["shape"]):
            layer.pop("scale")
        if layer["codec"] == "raw":
            layer.pop("bytes")
        if rebuilt:
            for key in ("name", "type", "shape"):
                layer.pop(key)
        layer.pop("bank")
    if rebuilt:
        slim["dense"]["tensors"] = [group for _, _, group in slim["dense"]["tensors"]]
    return slim


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def binary_layers(layers: list[dict]) -> bytes:
    """Per layer: flags byte (codec, invert, scale present), rice_k, ones and bytes as varints."""
    out = bytearray()
    for layer in layers:
        flags = (layer["codec"] == "rice") | (bool(layer.get("invert")) << 1) | (("scale" in layer) << 2)
        out.append(flags)
        if layer["codec"] == "rice":
            out.append(layer["rice_k"])
        out += varint(layer["ones"])
        if "bytes" in layer:
            out += varint(layer["bytes"])
        if "scale" in layer:
            out += struct.pack("<f", layer["scale"])
    return bytes(out)


def candidates(header: dict, text_escaped_extra: int, data_size: int) -> dict[str, int]:
    """Bytes of the PEMN header part under each candidate encoding (the tensor table is shared)."""
    text = canonical(header)
    assert json.loads(text) == header
    packed = deflate(text)
    assert inflate(packed) == text
    slim = drop_derived(header)
    slim_text = canonical(slim)
    slim_packed = deflate(slim_text)
    layer_blob = binary_layers(slim["layers"])
    rest = dict(slim, layers=len(slim["layers"]))
    rest_packed = deflate(canonical(rest))
    entry = tensor_entry_bytes("header", 0, data_size)
    return {
        "v1": len(text) + text_escaped_extra,
        "raw JSON": len(text) + entry,
        "deflate": len(packed) + entry,
        "deflate+b64": len(base64.b64encode(packed)),
        "derived dropped": len(slim_text) + entry,
        "derived dropped + deflate": len(slim_packed) + entry,
        "binary layer table + deflate": len(layer_blob) + len(rest_packed) + 2 * entry,
    }


def parts(header: dict) -> dict[str, int]:
    """Canonical-JSON bytes of each top-level key (with its name), escaped as in the metadata string."""
    out = {}
    for key, value in header.items():
        piece = canonical({key: value})[1:-1]
        out[key] = len(json.dumps(piece.decode())) - 2
    return out


# ------------------------------------------------------------------------------------------ report
def measure(files: list[tuple[str, Path]]) -> list[dict]:
    rows = []
    for label, path in files:
        file_size = path.stat().st_size
        st_bytes, table, header = read_container(path)
        text = table["__metadata__"]["pemn.header"]
        escaped = len(json.dumps(text)) - 2 - len(text)
        data_size = file_size - st_bytes
        rows.append(
            {
                "model": label,
                "file": file_size,
                "st_header": st_bytes,
                "pemn_header": len(text),
                "escaping": escaped,
                "parts": parts(header),
                "layers": len(header["layers"]),
                "dense_entries": len(header["dense"]["tensors"]),
                "candidates": candidates(header, escaped, data_size),
            }
        )
    return rows


def render(rows: list[dict], command: str) -> str:
    names = list(rows[0]["candidates"])
    lines = [
        "# Header bytes of `.pemn` v1 files and candidate compact encodings",
        "",
        f"Generated by `{command}`. Files are real `pemn compress` outputs (1 epoch on 300 images: the header",
        "does not depend on training length). Bytes of the PEMN header only; the safetensors tensor table",
        "(names, dtypes, shapes, offsets of `masks`, `dense.*`, `values.*`) is the same for every candidate.",
        "",
        "## Where v1 header bytes go",
        "",
        "| model | file bytes | safetensors header | of it PEMN header (escaped) | escaping | layers | dense entries "
        "| layers part | dense part | provenance | banks | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["parts"]
        other = sum(p.values()) - p["layers"] - p["dense"] - p["provenance"] - p["banks"]
        lines.append(
            f"| {r['model']} | {r['file']:,} | {r['st_header']:,} ({100 * r['st_header'] / r['file']:.0f}%) | "
            f"{r['pemn_header'] + r['escaping']:,} | {r['escaping']:,} | {r['layers']} | {r['dense_entries']} | "
            f"{p['layers']:,} | {p['dense']:,} | {p['provenance']:,} | {p['banks']:,} | {other:,} |"
        )
    lines += [
        "",
        "## PEMN header bytes per candidate encoding",
        "",
        "| model | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for r in rows:
        c = r["candidates"]
        cells = [f"{c[n]:,} ({100 * c[n] / c['v1']:.0f}%)" for n in names]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    saved = {n: sum(r["candidates"]["v1"] - r["candidates"][n] for r in rows) for n in names}
    total_files = sum(r["file"] for r in rows)
    lines += [
        "",
        "Bytes saved over all files ("
        + f"{total_files:,} B in all): "
        + ", ".join(f"{n} {saved[n]:,} B ({100 * saved[n] / total_files:.1f}% of the files)" for n in names[1:])
        + ".",
        "",
        "What a generic safetensors tool (`safetensors.safe_open(...).metadata()`) still shows: v1 and raw JSON",
        "in metadata show the whole header as text; `deflate+b64` keeps it in `__metadata__` but opaque; the",
        "tensor candidates (`raw JSON`, `deflate`, the binary table) move it out of the metadata, so only the",
        "tensor table and whatever short plain keys the format keeps in `__metadata__` remain visible.",
        "`pemn inspect` decodes every candidate. Dropping derived fields needs the architecture (zoo files) or",
        "the format's derivation rules (banks, Kaiming scales, raw byte counts) to show them again.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the written files (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = measure(write_files(work, args.seed))
    command = "PYTHONPATH=. python benchmarks/header_sizes.py" + (f" --out {args.out.as_posix()}" if args.out else "")
    text = render(rows, command)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
