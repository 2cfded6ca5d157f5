"""Mutation fuzzer for the `.pemn` readers, seeded from the golden vectors (formats/vectors/valid).

Every case takes one valid vector, mutates it with a ``random.Random`` seeded by ``(seed, case)``
(so any case can be replayed alone), and runs

* the package: ``read_pemn`` + ``decode_weights`` + ``verify_fingerprint`` (and, for a fraction of
  the cases, ``pemn.load`` with the vector's skeleton or its registry reference, sometimes
  ``masked=True``);
* the numpy-only reference reader (formats/reference_reader.py) on the same bytes.

The package must end either in success (the fingerprint verified) or in a ``PemnError`` subclass.
Anything else is an **unexpected outcome**: another exception, a case slower than ``--slow`` seconds
(2 s), a traced numpy/Python peak beyond ``memory_bound`` (``tracemalloc`` on every
``--memory-every``-th case), or a jump of the process's max RSS. Its input is saved to
``--crash-dir`` with a JSON note (mutations, traceback) and can be replayed with ``--replay CASE``.
The two readers must also agree on accept/refuse; when both accept they must give the same weight
bits, and when both refuse, the error class is compared too (informational: a mutated file often has
several faults, and the spec pins the class only for a file with exactly one).

Mutations (``MUTATORS``): bit flips, byte insertions and deletions, truncation at every structural
boundary (inside the 8-byte length, inside the JSON header, at and around each tensor boundary), the
header length itself; edits of the safetensors entries (dtype, shape, offsets, extra/missing keys and
tensors, re-typed or resized tensors, another layout order); ``__metadata__`` edits (format, version,
hash, non-string values); PEMN header edits at any JSON path (type changes, sizes, shapes, codec names,
huge counts, deleted/added keys, swapped list items, textual edits: duplicate keys, NaN, deep nesting,
huge integers, ``144.0`` for ``144``). Structured edits re-sign ``pemn.header_sha256`` and
``checksums.data`` (most of the time) so that they reach the deep checks; semantic edits (seed, scale,
distribution, stored values, re-encoded masks with any codec/k/invert) also recompute the fingerprint
with the reference reader, so the file is valid again and both readers' weight bits are compared.

    PYTHONPATH=. python benchmarks/fuzz_loader.py --cases 2000 --seed 1 --report /tmp/fuzz.json
    PYTHONPATH=. python benchmarks/fuzz_loader.py --seed 1 --replay 1234     # one case, verbosely
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import json
import math
import random
import resource
import signal
import struct
import sys
import time
import traceback
import tracemalloc
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/fuzz_loader.py` from a checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pemn_compress.errors import PemnError  # noqa: E402
from pemn_compress.fileformat.reader import decode_masks, decode_weights, read_pemn, verify_fingerprint  # noqa: E402

VECTORS = ROOT / "formats" / "vectors"
DEFAULT_MAX_WEIGHTS = 1 << 20  # both readers' limit in the fuzzer: accepted files stay cheap to decode
SLOW_SECONDS = 2.0  # a case slower than this (one reader call) is an unexpected outcome
HARD_TIMEOUT = 30  # seconds: the case is abandoned (SIGALRM) and recorded as a hang
RSS_JUMP = 512 << 20  # a max-RSS increase beyond this in one case is an unexpected outcome
MAX_SAVED_PER_CLASS = 25  # crash-folder inputs kept per outcome class

__all__ = [
    "FuzzStats",
    "MUTATORS",
    "Seed",
    "load_seeds",
    "make_case",
    "memory_bound",
    "reference_reader",
    "run_case",
    "run_fuzz",
]


# ---------------------------------------------------------------------------------------------- seeds
def reference_reader():
    """formats/reference_reader.py as a module (numpy only; never imports the package)."""
    name = "pemn_reference_reader"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "formats" / "reference_reader.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass
class Seed:
    """A valid vector, parsed: tensors (name -> (dtype, shape, bytes)) in layout order, metadata, header."""

    name: str
    blob: bytes
    tensors: dict
    metadata: dict
    header: dict
    load: dict
    masks: dict = field(default_factory=dict)  # layer name -> decoded bool mask (flat), from the reference reader
    digest: str = ""  # content_digest of the valid file


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_seeds(folder: Path = VECTORS / "valid") -> list[Seed]:
    expected = json.loads((folder / "expected.json").read_text())["vectors"]
    ref = reference_reader()
    seeds = []
    for name in sorted(expected):
        blob = (folder / name).read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        entries = json.loads(blob[8 : 8 + n])
        metadata = entries.pop("__metadata__")
        data = blob[8 + n :]
        order = sorted(entries, key=lambda t: entries[t]["data_offsets"])
        tensors = {
            t: (entries[t]["dtype"], list(entries[t]["shape"]), data[slice(*entries[t]["data_offsets"])]) for t in order
        }
        header = json.loads(metadata["pemn.header"])
        masks = {k: v.reshape(-1).copy() for k, v in ref.read(blob)["masks"].items()}
        digest = content_digest(*_package(blob, DEFAULT_MAX_WEIGHTS, ["read"]))
        seeds.append(Seed(name, blob, tensors, metadata, header, expected[name]["load"], masks, digest))
    return seeds


# ---------------------------------------------------------------------------------------------- a case
ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}


class Candidate:
    """A seed being mutated. ``encode`` lays the tensors out in ``order``, signs and serializes."""

    def __init__(self, seed: Seed):
        self.seed = seed
        self.tensors = {k: [d, list(s), bytes(b)] for k, (d, s, b) in seed.tensors.items()}
        self.order = list(seed.tensors)
        self.metadata = dict(seed.metadata)
        self.header = copy.deepcopy(seed.header)
        self.entry_edits = []  # callables(entries) applied after layout: break the container on purpose
        self.header_text_edits = []  # callables(text) -> text on the canonical pemn.header text
        self.container_text_edits = []  # callables(text) -> text on the safetensors JSON text
        self.sign_header = True
        self.sign_data = True
        self.refingerprint = False

    def data(self) -> bytes:
        return b"".join(self.tensors[t][2] for t in self.order if t in self.tensors)

    def encode(self, fingerprint: str | None = None) -> bytes:
        entries, offset = {}, 0
        for name in self.order:
            if name not in self.tensors:
                continue
            dtype, shape, raw = self.tensors[name]
            entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
            offset += len(raw)
        for edit in self.entry_edits:
            try:
                edit(entries)
            except (KeyError, IndexError, TypeError, ValueError):  # an entry an earlier edit already broke
                pass
        data = self.data()
        header = copy.deepcopy(self.header)
        if isinstance(header, dict):
            if self.sign_data and isinstance(header.get("checksums"), dict):
                header["checksums"]["data"] = sha256(data)
            if fingerprint is not None and isinstance(header.get("fingerprint"), dict):
                header["fingerprint"]["value"] = fingerprint
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        for edit in self.header_text_edits:
            text = edit(text)
        metadata = dict(self.metadata)
        if "pemn.header" in metadata or self.sign_header:
            metadata["pemn.header"] = text
        if self.sign_header and "pemn.header_sha256" in metadata:
            metadata["pemn.header_sha256"] = sha256(text.encode("utf-8", "surrogatepass"))
        container = {"__metadata__": metadata, **entries}
        ctext = json.dumps(container, separators=(",", ":"), ensure_ascii=True)
        for edit in self.container_text_edits:
            ctext = edit(ctext)
        raw = ctext.encode("utf-8", "surrogatepass")
        raw += b" " * (-len(raw) % 8)
        return struct.pack("<Q", len(raw)) + raw + data


def boundaries(blob: bytes) -> list[int]:
    """Structural cut points of a (possibly broken) container: length, header, every tensor edge."""
    points = set(range(0, 9))
    if len(blob) >= 8:
        (n,) = struct.unpack("<Q", blob[:8])
        if 8 + n <= len(blob):
            points |= {8 + n - 1, 8 + n, 8 + n + 1, 8 + n // 2, 9}
            try:
                entries = json.loads(blob[8 : 8 + n])
                for name, entry in entries.items():
                    if name != "__metadata__":
                        for o in entry["data_offsets"]:
                            points |= {8 + n + o - 1, 8 + n + o, 8 + n + o + 1}
            except Exception:  # noqa: BLE001 - a broken header just has fewer boundaries
                pass
    points.add(len(blob) - 1)
    return sorted(p for p in points if 0 <= p < len(blob))


# ---------------------------------------------------------------------------------------------- value pools
INTS = [
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    9,
    63,
    64,
    255,
    256,
    1000,
    2**16,
    2**31 - 1,
    2**31,
    2**31 + 1,
    2**32,
    2**34,
    2**34 + 1,
    2**36,
    2**40,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    10**12,
    1_600_000_000,
]
FLOATS = [
    0.0,
    -0.0,
    0.5,
    1.0,
    1.5,
    -1.0,
    0.1,
    1e-300,
    2.0**-149,
    2.0**-126,
    3.4028234663852886e38,
    3.5e38,
    1e308,
    0.9999999,
    1.0000001,
    1e-5,
]
STRINGS = [
    "",
    "raw",
    "rice",
    "zstd",
    "none",
    "copy",
    "rand",
    "dense",
    "onelayer",
    "mp",
    "rp",
    "normal",
    "uniform",
    "signed_constant",
    "Linear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "registry",
    "import",
    "float16",
    "float32",
    "bfloat16",
    "f32",
    "f16",
    "i64",
    "f64",
    "sha256",
    "philox4x32-10",
    "mt19937",
    "\x1b[31mred\x1b[0m",
    "[bold]x[/bold]",
    "\u202eevil",
    "\ud800",
    "a" * 300,
    "os:system",
    "__import__",
    "0",
    "1",
    "1e9",
    "NaN",
]
OTHER = [True, False, None, [], {}, [1], [0, 0], {"a": 1}, [[[]]], {"__class__": "os.system"}]


def any_value(rng: random.Random):
    pool = rng.choice((INTS, FLOATS, STRINGS, OTHER))
    return copy.deepcopy(rng.choice(pool))


def tweak(rng: random.Random, value):
    """A near or hostile variant of ``value`` that keeps its JSON type most of the time."""
    if isinstance(value, bool):
        return rng.choice([not value, int(value), str(value).lower(), None])
    if isinstance(value, int):
        return rng.choice(
            [
                value + 1,
                value - 1,
                value * 2,
                value * 1000,
                0,
                -value,
                value + 2**32,
                float(value),
                rng.choice(INTS),
                str(value),
            ]
        )
    if isinstance(value, float):
        return rng.choice(
            [
                value * 2,
                value / 2,
                -value,
                value + 1e-7,
                float(np.nextafter(np.float32(value), np.float32(np.inf))),
                int(value),
                rng.choice(FLOATS),
                str(value),
            ]
        )
    if isinstance(value, str):
        return rng.choice([value.upper(), value + "x", value[:-1], " " + value, rng.choice(STRINGS), value * 2, None])
    if isinstance(value, list):
        if value and rng.random() < 0.5:
            out = copy.deepcopy(value)
            i = rng.randrange(len(out))
            out[i] = tweak(rng, out[i])
            return out
        return rng.choice([value[:-1], value + value[-1:], value[::-1], [value], []])
    if isinstance(value, dict):
        return rng.choice([{}, {**value, "zzz": any_value(rng)}, list(value.values())])
    return any_value(rng)


def json_paths(node, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out += json_paths(child, prefix + (key,))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += json_paths(child, prefix + (i,))
    return out


def get_path(node, path):
    for p in path:
        node = node[p]
    return node


def set_path(node, path, value):
    if not path:
        return value
    get_path(node, path[:-1])[path[-1]] = value
    return node


def random_float32(rng: random.Random) -> float:
    """A finite float32 (any exponent: subnormals, zeros, the extremes), as a Python float."""
    while True:
        bits = (
            rng.getrandbits(32)
            if rng.random() < 0.6
            else (rng.getrandbits(1) << 31) | (rng.randrange(100, 160) << 23) | rng.getrandbits(23)
        )
        value = np.uint32(bits).view(np.float32)
        if np.isfinite(value):
            return float(value)


# ---------------------------------------------------------------------------------------------- mutators
# structured mutators edit a Candidate; byte mutators edit the final bytes


def m_header_value(rng, c: Candidate):
    """Replace or tweak the value at a random path of the PEMN header."""
    paths = [p for p in json_paths(c.header) if p]
    path = rng.choice(paths)
    old = get_path(c.header, path)
    new = tweak(rng, old) if rng.random() < 0.6 else any_value(rng)
    set_path(c.header, path, new)
    return f"header{list(path)}"


def m_header_delete(rng, c: Candidate):
    paths = [p for p in json_paths(c.header) if p]
    path = rng.choice(paths)
    parent = get_path(c.header, path[:-1])
    del parent[path[-1]]
    return f"delete{list(path)}"


def m_header_add(rng, c: Candidate):
    containers = [p for p in json_paths(c.header) if isinstance(get_path(c.header, p), (dict, list))]
    path = rng.choice(containers)
    node = get_path(c.header, path)
    if isinstance(node, dict):
        key = rng.choice(
            ["zzz", "prune_rate", "name", "kwargs", "target", "version", "stored", "invert", "rice_k", "__proto__"]
        )
        node[key] = any_value(rng)
        return f"add{list(path) + [key]}"
    if node:
        node.insert(rng.randrange(len(node) + 1), copy.deepcopy(rng.choice(node)))
    else:
        node.append(any_value(rng))
    return f"append{list(path)}"


def m_header_swap(rng, c: Candidate):
    lists = [
        p for p in json_paths(c.header) if isinstance(get_path(c.header, p), list) and len(get_path(c.header, p)) > 1
    ]
    if not lists:
        return m_header_value(rng, c)
    path = rng.choice(lists)
    node = get_path(c.header, path)
    i, j = rng.sample(range(len(node)), 2)
    node[i], node[j] = node[j], node[i]
    return f"swap{list(path)}"


LAYER_VALUES = {
    "name": lambda rng, layer, c: rng.choice(["", "x", "\x1b[2J", "\ud800", 5, None, c.header["layers"][0]["name"]]),
    "type": lambda rng, layer, c: rng.choice(["Linear", "Conv1d", "Conv2d", "Conv3d", "linear", 1]),
    "shape": lambda rng, layer, c: rng.choice(
        [
            layer["shape"][:1],
            layer["shape"] + [1],
            [1] + layer["shape"],
            [0] + layer["shape"][1:],
            [-1] + layer["shape"][1:],
            [2**17, 2**17],
            [2**31 + 1, 1],
            [10**6, 10**6],
            [1] * 6,
            [d * 2 for d in layer["shape"]],
            layer["shape"][::-1],
            [math.prod(layer["shape"]), 1],
            [float(d) for d in layer["shape"]],
            "3x3",
            [2**34 + 1, 1],
            [2**63, 2**63],
        ]
    ),
    "bank": lambda rng, layer, c: rng.choice([0, 1, 2, -1, 99, 2**63, "0", 0.0]),
    "scale": lambda rng, layer, c: rng.choice(
        [random_float32(rng), 0.1, 1, 10**400 if rng.random() < 0.1 else 2**200, "1.0", -0.0, 0.0]
    ),
    "codec": lambda rng, layer, c: rng.choice(["raw", "rice", "zstd", "RAW", "", None]),
    "ones": lambda rng, layer, c: rng.choice(
        [
            layer["ones"] + 1,
            layer["ones"] - 1,
            0,
            math.prod(layer["shape"]),
            math.prod(layer["shape"]) + 1,
            2**31,
            1_600_000_000,
            -1,
            2**64,
        ]
    ),
    "bytes": lambda rng, layer, c: rng.choice([layer["bytes"] + 1, layer["bytes"] - 1, 0, 2**31, -1, 2**40, 10**12]),
    "rice_k": lambda rng, layer, c: rng.choice([0, 1, 5, 39, 40, 41, 63, 64, -1, 2**40, None]),
    "invert": lambda rng, layer, c: rng.choice([True, False, 0, 1, "true", None]),
}


def m_layer_field(rng, c: Candidate):
    layers = c.header.get("layers")
    if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict):
        return m_header_value(rng, c)
    layer = rng.choice(layers)
    key = rng.choice(list(LAYER_VALUES))
    layer[key] = LAYER_VALUES[key](rng, layer, c)
    return f"layer.{key}"


CONFIG_VALUES = {
    "density": [0.0, 1e-300, 0.5, 1.0, 1.0000001, -0.5, True, "0.5", 2**64],
    "strategy": ["dense", "onelayer", "mp", "rp", "RP", "", None],
    "ratio": [None, 1e-5, 0.5, 1.0, 1.5, 0.0, -1.0, 1e-300, 2**64, True],
    "rp_mode": ["copy", "rand", "shuffle", None],
    "distribution": ["normal", "uniform", "signed_constant", "cauchy", 0],
    "rescale": [True, False, 1, None],
    "seed": [0, 1, 2**63 - 1, 2**63, -1, 2**64 - 1, 1.0, "0"],
    "learn_values": [True, False, 0],
    "train_norm": [True, False, "yes"],
    "version": [0, 1, 2, 1.0, "1", True],
}


def m_config_field(rng, c: Candidate):
    config = c.header.get("config")
    if not isinstance(config, dict):
        return m_header_value(rng, c)
    key = rng.choice(list(CONFIG_VALUES))
    value = copy.deepcopy(rng.choice(CONFIG_VALUES[key]))
    if rng.random() < 0.15:
        config.pop(key, None)  # absent fields take their defaults
        return f"delete.{key}"
    config[key] = value
    if key == "seed" and rng.random() < 0.7 and isinstance(c.header.get("generator"), dict):
        c.header["generator"]["seed"] = value
    return f"config.{key}"


def m_bank_field(rng, c: Candidate):
    banks = c.header.get("banks")
    if not isinstance(banks, list) or not banks or not isinstance(banks[0], dict):
        return m_header_value(rng, c)
    bank = rng.choice(banks)
    key = rng.choice(["index", "size", "length", "tiling", "stored"])
    bank[key] = rng.choice(
        [
            tweak(rng, bank.get(key)),
            rng.choice(INTS),
            rng.choice(["none", "copy", "rand", "tile"]),
            not bank.get("stored"),
        ]
    )
    return f"bank.{key}"


def m_dense_field(rng, c: Candidate):
    dense = c.header.get("dense")
    if not isinstance(dense, dict):
        return m_header_value(rng, c)
    choice = rng.randrange(4)
    if choice == 0:
        dense["dtype"] = rng.choice(["float32", "float16", "bfloat16", "float64", None])
        return "dense.dtype"
    if choice == 1:
        dense["folded_batchnorm"] = rng.choice([[], ["0"], ["\x1b[31m"], "0", [0], [""], ["1", "1"]])
        return "dense.folded_batchnorm"
    table = dense.get("tensors")
    if not isinstance(table, list) or not table:
        dense["tensors"] = rng.choice([[], None, [["x", [1], "f32"]]])
        return "dense.tensors"
    item = rng.choice(table)
    if isinstance(item, list) and len(item) == 3:
        j = rng.randrange(3)
        item[j] = rng.choice(
            [
                [tweak(rng, item[0]), "", "\x1b[0m", 5],
                [[], [0], [2**40], [-1], item[1] + [1], [1] * 9, "3"],
                ["f32", "f16", "i64", "f64", None],
            ][j]
        )
    return "dense.tensors[]"


def m_arch_field(rng, c: Candidate):
    arch = c.header.get("architecture")
    if not isinstance(arch, dict):
        return m_header_value(rng, c)
    choice = rng.randrange(5)
    if choice == 0:
        arch["kind"] = rng.choice(["registry", "import", "none", "pickle", None])
    elif choice == 1:
        arch["name"] = rng.choice(
            ["test_convmixer", "test_mlp", "convmixer_512_8", "__import__", "os.system", 5, None, ""]
        )
    elif choice == 2:
        kwargs = arch.setdefault("kwargs", {}) if isinstance(arch.get("kwargs", {}), dict) else {}
        key = rng.choice(["name", "dim", "depth", "kernel_size", "num_classes", "__class__", "bias", "in_chans"])
        kwargs[key] = rng.choice(
            [1, 2, 20_000, 2**31, -1, 0, True, "x", None, [1], {"__reduce__": ["os.system", ["id"]]}, 1.5]
        )
        arch["kwargs"] = kwargs
    elif choice == 3:
        arch["kwargs"] = rng.choice([None, [], "dim=4", {"name": "test_mlp"}])
    else:
        arch["target"] = rng.choice(["os:system", "builtins:exec", "subprocess:run", "x", ""])
    return f"architecture.{choice}"


def m_header_text(rng, c: Candidate):
    """A textual edit of pemn.header: what a JSON object cannot express."""
    kind = rng.randrange(8)

    def edit(text, kind=kind):
        if kind == 0:  # an integer token written as a float
            digits = [i for i in range(1, len(text)) if text[i].isdigit() and text[i - 1] == ":"]
            if digits:
                i = rng.choice(digits)
                j = i
                while j < len(text) and text[j].isdigit():
                    j += 1
                return text[:j] + rng.choice([".0", "e0", "0" * 400, ".5"]) + text[j:]
            return text
        if kind == 1:
            return text[:-1] + ',"provenance":{"x":1},"provenance":{}}'  # duplicate key
        if kind == 2:
            return (
                text[:-1]
                + ',"zzz":'
                + rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "-" + "9" * 30])
                + "}"
            )
        if kind == 3:
            depth = rng.choice([63, 64, 65, 1000, 50000])
            return text[:-1] + ',"zzz":' + "[" * depth + "]" * depth + "}"
        if kind == 4:
            return text[: rng.randrange(len(text))]  # cut
        if kind == 5:
            return text[:-1] + ',"zzz":"' + rng.choice(["\\ud800", "\\udfff\\ud800", "\\u0000", "\\u001b[31m"]) + '"}'
        if kind == 6:
            return rng.choice(["[]", "null", "1", '"x"', "{}", " {} ", "\ufeff{}"])
        i = rng.randrange(len(text))
        return text[:i] + rng.choice(["\\", '"', "}", "{", ",", "\x00", " ", "\u00e9"]) + text[i:]

    c.header_text_edits.append(edit)
    return f"header_text.{kind}"


def m_metadata(rng, c: Candidate):
    kind = rng.randrange(6)
    if kind == 0:
        c.metadata["format"] = rng.choice(["pt", "PEMN", "pemn ", "", "np", "\x1b[31mpemn"])
    elif kind == 1:
        c.metadata["pemn.version"] = rng.choice(
            [
                "0",
                "2",
                "01",
                "001",
                "1 ",
                " 1",
                "1.0",
                "",
                "9" * 7,
                "999999",
                "1000000",
                "\u0661",
                "\u00b9",
                "-1",
                "+1",
                "1e0",
                "0x1",
                "１",
            ]
        )
    elif kind == 2:
        c.metadata.pop(rng.choice(["format", "pemn.version", "pemn.header", "pemn.header_sha256"]), None)
    elif kind == 3:
        c.metadata[rng.choice(["zzz", "producer", "\x1b[31m", ""])] = rng.choice(
            ["x", "\x1b]0;title\x07", "y" * 5000, "[red]x"]
        )
    elif kind == 4:
        c.sign_header = False
        h = c.metadata.get("pemn.header_sha256", "")
        c.metadata["pemn.header_sha256"] = rng.choice([h.upper(), h[:-1], h + "0", " " + h, "0" * 64, ""])
    else:
        c.container_text_edits.append(
            lambda t: t.replace('"format":"pemn"', '"format":' + rng.choice(["1", "null", "[]", '{"a":"b"}']), 1)
        )
    return f"metadata.{kind}"


def m_entry(rng, c: Candidate):
    """Break a safetensors entry (dtype, shape, offsets, keys) without touching the data."""
    names = list(c.tensors)
    name = rng.choice(names)
    kind = rng.randrange(4)

    def edit(entries, name=name, kind=kind):
        if name not in entries:
            return
        entry = entries[name]
        if kind == 0:
            entry["dtype"] = rng.choice(list(ITEMSIZE) + ["BF16", "F8_E4M3", "F8_E5M2", "bool", "X", 5, None])
        elif kind == 1:
            s = entry["shape"]
            entry["shape"] = rng.choice(
                [
                    s + [1],
                    s[:-1],
                    [d * 2 for d in s],
                    [d + 1 for d in s],
                    [0],
                    [-1],
                    [2**40],
                    [2**64],
                    ["3"],
                    [1.0],
                    [1] * 9,
                    [],
                ]
            )
        elif kind == 2:
            b, e = entry["data_offsets"]
            k = rng.choice([1, 2, 4, 8, 1000, 2**32, 2**63])
            entry["data_offsets"] = rng.choice(
                [
                    [b + k, e + k],
                    [b - k, e - k],
                    [b, e + k],
                    [b + k, e],
                    [e, b],
                    [-1, e],
                    [b, 2**64],
                    [float(b), e],
                    [b, e, e],
                    "0-1",
                    [b],
                ]
            )
        else:
            if rng.random() < 0.5:
                entry["zzz"] = 1
            else:
                del entry[rng.choice(["dtype", "shape", "data_offsets"])]

    c.entry_edits.append(edit)
    return f"entry.{kind}"


def m_tensor_layout(rng, c: Candidate):
    """Consistent container edits: resize, retype, remove, add or reorder tensors (data re-signed)."""
    kind = rng.randrange(5)
    names = list(c.tensors)
    name = rng.choice(names)
    dtype, shape, raw = c.tensors[name]
    if kind == 0:  # resize by a few elements
        size = ITEMSIZE.get(dtype, 1)
        delta = rng.choice([-2, -1, 1, 2, 8])
        count = max(0, len(raw) // size + delta)
        raw = (raw + bytes(rng.getrandbits(8) for _ in range(max(0, count * size - len(raw)))))[: count * size]
        c.tensors[name] = [dtype, [count], raw]
    elif kind == 1:  # retype, same bytes
        new = rng.choice([d for d in ITEMSIZE if len(raw) % ITEMSIZE[d] == 0])
        c.tensors[name] = [new, [len(raw) // ITEMSIZE[new]], raw]
    elif kind == 2:
        del c.tensors[name]
    elif kind == 3:
        new = rng.choice(
            [
                "extra",
                "values.0",
                "values.1",
                "values.7",
                "dense.f64",
                "dense.f16",
                "dense.i64",
                "masks2",
                "",
                "\x1b[31mx",
                "__metadata__x",
            ]
        )
        dt = rng.choice(["U8", "F32", "I64", "F16"])
        count = rng.choice([0, 1, 3, 16])
        c.tensors.setdefault(new, [dt, [count], bytes(rng.getrandbits(8) for _ in range(count * ITEMSIZE[dt]))])
        c.order.insert(rng.randrange(len(c.order) + 1), new)
    else:  # another layout order: still a valid file (readers must not depend on the order)
        rng.shuffle(c.order)
    return f"layout.{kind}"


def m_data_flip(rng, c: Candidate):
    """Flip bits inside one tensor's data, then re-sign the data checksum: reaches mask decoding."""
    names = [n for n in c.tensors if c.tensors[n][2]]
    if not names:
        return m_header_value(rng, c)
    name = "masks" if "masks" in names and rng.random() < 0.7 else rng.choice(names)
    raw = bytearray(c.tensors[name][2])
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    c.tensors[name][2] = bytes(raw)
    return f"data_flip.{name}"


# ---- semantic edits: the file stays (or becomes again) valid; the fingerprint is recomputed


def m_sem_seed(rng, c: Candidate):
    seed = rng.choice([0, 1, 2**32 - 1, 2**32, 2**63 - 1, rng.getrandbits(63), rng.getrandbits(20)])
    if isinstance(c.header.get("config"), dict) and isinstance(c.header.get("generator"), dict):
        c.header["config"]["seed"] = c.header["generator"]["seed"] = seed
    c.refingerprint = True
    return "sem.seed"


def m_sem_scale(rng, c: Candidate):
    layers = c.header.get("layers")
    if isinstance(layers, list) and layers and isinstance(layers[0], dict):
        rng.choice(layers)["scale"] = random_float32(rng)
    c.refingerprint = True
    return "sem.scale"


def m_sem_distribution(rng, c: Candidate):
    if isinstance(c.header.get("config"), dict):
        c.header["config"]["distribution"] = rng.choice(["normal", "uniform", "signed_constant"])
    c.refingerprint = True
    return "sem.distribution"


def m_sem_values(rng, c: Candidate):
    stored = [n for n in c.tensors if n.startswith("values.")]
    target = (
        rng.choice(stored)
        if stored
        else rng.choice([n for n in c.tensors if n.startswith("dense.")] or list(c.tensors))
    )
    dtype, shape, raw = c.tensors[target]
    if dtype == "F32" and raw:
        values = np.frombuffer(raw, "<f4").copy()
        for _ in range(rng.choice([1, 2, 5])):
            values[rng.randrange(values.size)] = random_float32(rng) if rng.random() < 0.95 else np.float32(np.nan)
        c.tensors[target][2] = values.tobytes()
    c.refingerprint = True
    return f"sem.values.{target.split('.')[0]}"


def rice_encode(x: np.ndarray, k: int) -> bytes:
    """Golomb-Rice code of the gaps between the ones of ``x`` (spec 7.3), written independently."""
    positions = np.flatnonzero(x)
    gaps = np.diff(positions, prepend=-1) - 1
    bits: list[int] = []
    for g in gaps.tolist():
        bits += [1] * (g >> k) + [0] + [(g >> (k - 1 - b)) & 1 for b in range(k)]
    return np.packbits(np.array(bits, dtype=np.uint8)).tobytes() if bits else b""


def m_sem_mask(rng, c: Candidate):
    """Change a layer's mask and re-encode it with a random codec, k and invert: still a valid file."""
    layers = c.header["layers"]
    i = rng.randrange(len(layers))
    layer = layers[i]
    flat = c.seed.masks[layer["name"]].copy()
    n = flat.size
    kind = rng.randrange(4)
    if kind == 0:
        for _ in range(rng.choice([1, 2, 5])):
            flat[rng.randrange(n)] ^= True
    elif kind == 1:
        flat[:] = rng.random() < 0.5  # all kept or none kept
    else:
        p = rng.choice([0.001, 0.01, 0.1, 0.5, 0.9, 0.99])
        flat = np.array([rng.random() < p for _ in range(n)], dtype=bool)
    streams, start = [], 0
    masks = c.tensors["masks"][2]
    for layer in layers:
        streams.append(masks[start : start + layer["bytes"]])
        start += layer["bytes"]
    for key in ("rice_k", "invert"):
        layer.pop(key, None)
    if rng.random() < 0.4:
        streams[i] = np.packbits(flat).tobytes()
        layer.update(codec="raw", ones=int(flat.sum()), bytes=len(streams[i]))
    else:
        invert = rng.random() < 0.5
        k = rng.choice([0, 0, 1, 2, 3, 4, 5, 8, 12, 20, 40])
        x = ~flat if invert else flat
        streams[i] = rice_encode(x, k)
        layer.update(codec="rice", ones=int(x.sum()), bytes=len(streams[i]), rice_k=k, invert=invert)
    c.tensors["masks"] = ["U8", [sum(len(s) for s in streams)], b"".join(streams)]
    c.refingerprint = True
    return f"sem.mask.{layer['codec']}"


def m_sem_reshape(rng, c: Candidate):
    """Same weights, another shape of the same size (C order unchanged): both readers accept."""
    layer = rng.choice(c.header["layers"])
    n = math.prod(layer["shape"])
    options = [[n, 1], [1, n]] + ([[layer["shape"][0], n // layer["shape"][0], 1]] if len(layer["shape"]) >= 2 else [])
    layer["shape"] = rng.choice(options)
    c.refingerprint = True
    return "sem.reshape"


# ---- byte-level mutators on the final bytes


def b_bitflip(rng, blob: bytes) -> tuple[bytes, str]:
    out = bytearray(blob)
    if not out:
        return blob, "bitflip"
    (n,) = struct.unpack("<Q", blob[:8]) if len(blob) >= 8 else (len(blob),)
    for _ in range(rng.choice([1, 1, 2, 4, 8])):
        region = rng.random()
        if region < 0.4 and 8 + n <= len(out):
            i = rng.randrange(8, 8 + n) if n else rng.randrange(len(out))
        else:
            i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out), "bitflip"


def b_insert(rng, blob: bytes) -> tuple[bytes, str]:
    at = rng.choice(boundaries(blob) + [rng.randrange(len(blob) + 1)])
    size = rng.choice([1, 2, 7, 8, 16])
    junk = rng.choice([bytes(size), b" " * size, bytes(rng.getrandbits(8) for _ in range(size))])
    return blob[:at] + junk + blob[at:], "insert"


def b_delete(rng, blob: bytes) -> tuple[bytes, str]:
    if not blob:
        return blob, "delete"
    at = rng.choice(boundaries(blob) + [rng.randrange(len(blob))])
    return blob[:at] + blob[at + rng.choice([1, 2, 8, 16]) :], "delete"


def b_truncate(rng, blob: bytes) -> tuple[bytes, str]:
    cuts = boundaries(blob) or [0]
    if rng.random() < 0.3 and len(blob) > 8:  # anywhere inside the JSON header
        (n,) = struct.unpack("<Q", blob[:8])
        cuts = [rng.randrange(8, min(len(blob), 8 + n + 1))]
    return blob[: rng.choice(cuts)], "truncate"


def b_length(rng, blob: bytes) -> tuple[bytes, str]:
    (n,) = struct.unpack("<Q", blob[:8]) if len(blob) >= 8 else (0,)
    value = rng.choice(
        [
            0,
            1,
            2,
            n - 8,
            n - 1,
            n + 1,
            n + 8,
            len(blob) - 8,
            len(blob),
            100 * 1024 * 1024,
            100 * 1024 * 1024 + 1,
            2**32,
            2**63,
            2**64 - 1,
        ]
    )
    return struct.pack("<Q", value % 2**64) + blob[8:], "length"


STRUCTURED = [  # (mutator, weight)
    (m_header_value, 10),
    (m_header_delete, 4),
    (m_header_add, 3),
    (m_header_swap, 2),
    (m_layer_field, 10),
    (m_config_field, 5),
    (m_bank_field, 4),
    (m_dense_field, 4),
    (m_arch_field, 4),
    (m_header_text, 5),
    (m_metadata, 5),
    (m_entry, 6),
    (m_tensor_layout, 5),
    (m_data_flip, 8),
]
SEMANTIC = [
    (m_sem_seed, 2),
    (m_sem_scale, 3),
    (m_sem_distribution, 1),
    (m_sem_values, 2),
    (m_sem_mask, 6),
    (m_sem_reshape, 1),
]
BYTES = [(b_bitflip, 5), (b_insert, 2), (b_delete, 2), (b_truncate, 4), (b_length, 1)]
MUTATORS = {f.__name__: f for f, _ in STRUCTURED + SEMANTIC + BYTES}


def _pick(rng, table):
    funcs, weights = zip(*table, strict=True)
    return rng.choices(funcs, weights)[0]


def _apply(rng, mutator, c: Candidate) -> str:
    """Apply a structured mutator; one that no longer fits a file broken by an earlier one is skipped."""
    try:
        return f"{mutator.__name__}:{mutator(rng, c)}"
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return f"{mutator.__name__}:skipped"


@dataclass
class Case:
    index: int
    seed_name: str
    blob: bytes
    labels: list
    family: str  # bytes | structured | semantic
    load: bool
    masked: bool


def make_case(seeds: list[Seed], fuzz_seed: int, index: int, load_fraction: float = 0.05) -> Case:
    """Case ``index`` of run ``fuzz_seed``: deterministic, independent of every other case."""
    rng = random.Random(f"pemn-fuzz/{fuzz_seed}/{index}")
    seed = rng.choice(seeds)
    roll = rng.random()
    labels: list[str] = []
    if roll < 0.22:
        family = "bytes"
        blob = seed.blob
        for _ in range(rng.choice([1, 1, 1, 2])):
            mutator = _pick(rng, BYTES)
            blob, label = mutator(rng, blob)
            labels.append(f"{mutator.__name__}:{label}")
    else:
        c = Candidate(seed)
        family = "semantic" if roll > 0.75 else "structured"
        table = SEMANTIC if family == "semantic" else STRUCTURED
        for _ in range(rng.choice([1, 1, 1, 2, 3] if family == "structured" else [1, 1, 2])):
            labels.append(_apply(rng, _pick(rng, table), c))
        if family == "semantic" and rng.random() < 0.2:
            labels.append(_apply(rng, _pick(rng, STRUCTURED), c))
        if family == "structured":
            c.sign_header = c.sign_header and rng.random() < 0.93
            c.sign_data = rng.random() < 0.95
        blob = c.encode()
        if c.refingerprint:
            blob = _refingerprint(c, blob)
        if rng.random() < 0.06:
            mutator = _pick(rng, BYTES)
            blob, label = mutator(rng, blob)
            labels.append(f"{mutator.__name__}:{label}")
    load = rng.random() < load_fraction
    if any(label.startswith(("m_arch_field", "m_dense_field")) for label in labels):  # what only a loader follows
        load = load or rng.random() < min(1.0, 10 * load_fraction)
    return Case(index, seed.name, blob, labels, family, load, masked=load and rng.random() < 0.2)


def _refingerprint(c: Candidate, blob: bytes) -> bytes:
    """Recompute the weight fingerprint with the reference reader (if it can decode the file at all)."""
    ref = reference_reader()
    try:
        out = ref.read(blob, verify=False, max_weights=DEFAULT_MAX_WEIGHTS)
    except Exception:  # noqa: BLE001 - refused (or a reference-reader bug, which run_case reports): leave it
        return blob
    h = hashlib.sha256()
    for layer in out["header"]["layers"]:
        h.update(out["weights"][layer["name"]].astype("<f4").tobytes())
    return c.encode(fingerprint=h.hexdigest())


# ---------------------------------------------------------------------------------------------- running
class _HardTimeout(BaseException):
    """Raised by SIGALRM inside a reader that hangs; a BaseException so no `except Exception` eats it."""


def _alarm(signum, frame):
    raise _HardTimeout()


def declared_weights(blob: bytes) -> int:
    """Masked weights the file's PEMN header declares (0 when it cannot be parsed), for memory bounds."""
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        meta = json.loads(blob[8 : 8 + n]).get("__metadata__", {})
        header = json.loads(meta["pemn.header"])
        total = 0
        for layer in header["layers"]:
            if isinstance(layer.get("shape"), list) and all(type(d) is int and d > 0 for d in layer["shape"]):
                total += math.prod(layer["shape"])
        return total
    except Exception:  # noqa: BLE001 - any broken header declares nothing we would honour
        return 0


def memory_bound(blob: bytes, max_weights: int) -> int:
    """The most a reader may allocate for ``blob``: a multiple of the file size (rice decoding works on
    bit arrays of the stream) plus a multiple of the weights it declares, capped by ``max_weights``
    (masks, bank tables, weights, fingerprint), plus a fixed allowance."""
    weights = min(declared_weights(blob), max_weights)
    return 512 * len(blob) + 64 * weights + (4 << 20)


def _outcome(exc: BaseException | None, expected: tuple) -> str:
    if exc is None:
        return "accepted"
    if isinstance(exc, expected):
        return f"refused:{type(exc).__name__}"
    if isinstance(exc, _HardTimeout):
        return "unexpected:hang"
    return f"unexpected:{type(exc).__name__}"


def _package(blob: bytes, max_weights: int, stage: list):
    stage[0] = "read"
    pf = read_pemn(blob, max_weights=max_weights)
    stage[0] = "masks"
    masks = decode_masks(pf)
    stage[0] = "weights"
    weights = decode_weights(pf, masks)
    stage[0] = "fingerprint"
    verify_fingerprint(pf, weights)
    stage[0] = "accepted"
    return pf, [(layer.name, weights[layer.name]) for layer in pf.layers]


def content_digest(pf, weights) -> str:
    """What a file decodes to: PEMN header, weight bits, dense leftovers (as stored)."""
    h = hashlib.sha256(json.dumps(pf.header, sort_keys=True).encode())
    for name, w in weights:
        h.update(name.encode() + w.tobytes())
    for key, array in pf.dense_arrays().items():
        h.update(key.encode() + str(array.dtype).encode() + np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _timed(fn, *args):
    start = time.perf_counter()
    try:
        return fn(*args), None, time.perf_counter() - start
    except BaseException as exc:  # noqa: BLE001 - classified by the caller
        if isinstance(exc, KeyboardInterrupt):
            raise
        return None, exc, time.perf_counter() - start


_SKELETON_CACHE: dict = {}


def _skeleton(load: dict):
    import torch  # noqa: F401 - pemn.load needs it; imported lazily so the readers alone stay light

    if "skeleton" in load:
        if "make_vectors" not in _SKELETON_CACHE:
            spec = importlib.util.spec_from_file_location("pemn_make_vectors", ROOT / "formats" / "make_vectors.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _SKELETON_CACHE["make_vectors"] = module
        return _SKELETON_CACHE["make_vectors"].SKELETONS[load["skeleton"]]()
    from pemn_compress.models import create_model

    return create_model(load["registry"])


def _load(blob: bytes, seed: Seed, use_skeleton: bool, masked: bool, max_weights: int):
    import pemn_compress as pemn

    model = _skeleton(seed.load) if use_skeleton else None
    return pemn.load(blob, device="cpu", model=model, masked=masked, max_weights=max_weights)


@dataclass
class FuzzStats:
    cases: int = 0
    seconds: float = 0.0
    package: Counter = field(default_factory=Counter)
    reference: Counter = field(default_factory=Counter)
    load: Counter = field(default_factory=Counter)
    stage: Counter = field(default_factory=Counter)  # how deep the package got
    family: Counter = field(default_factory=Counter)
    family_accepted: Counter = field(default_factory=Counter)
    mutators: Counter = field(default_factory=Counter)
    agree: int = 0
    accept_refuse_disagreements: int = 0
    class_disagreements: Counter = field(default_factory=Counter)
    bit_disagreements: int = 0
    load_after_refusal: int = 0
    unexpected: Counter = field(default_factory=Counter)
    reference_unexpected: Counter = field(default_factory=Counter)
    memory_samples: int = 0
    memory_peak_ratio: float = 0.0  # max over samples of peak / bound
    max_case_seconds: float = 0.0
    examples: list = field(default_factory=list)  # unexpected outcomes and disagreements, with saved paths
    class_examples: list = field(default_factory=list)  # both refused, with different error classes

    def to_dict(self) -> dict:
        out = {k: (dict(v.most_common()) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
        out["cases_per_second"] = self.cases / self.seconds if self.seconds else None
        out["unexpected_total"] = sum(self.unexpected.values())
        return out


def run_case(
    case: Case,
    seeds_by_name: dict,
    stats: FuzzStats,
    *,
    max_weights: int = DEFAULT_MAX_WEIGHTS,
    measure_memory: bool = False,
    slow: float = SLOW_SECONDS,
    crash_dir: Path | None = None,
    saved: Counter | None = None,
) -> dict:
    """Run one case through both readers (and maybe pemn.load); update ``stats``; return a record."""
    ref = reference_reader()
    seed = seeds_by_name[case.seed_name]
    stage = ["read"]
    old_handler = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HARD_TIMEOUT)
    try:
        if measure_memory:
            tracemalloc.start()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        decoded, exc, seconds = _timed(_package, case.blob, max_weights, stage)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = None
        if measure_memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        ref_out, ref_exc, ref_seconds = _timed(lambda b: ref.read(b, max_weights=max_weights), case.blob)
        load_exc, load_outcome = None, None
        if case.load:
            use_skeleton = "skeleton" in seed.load or random.Random(case.index).random() < 0.3
            _, load_exc, _ = _timed(_load, case.blob, seed, use_skeleton, case.masked, max_weights)
            load_outcome = _outcome(load_exc, (PemnError,))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)

    outcome = _outcome(exc, (PemnError,))
    ref_outcome = _outcome(ref_exc, (ref.FormatError,))
    weights = decoded[1] if decoded is not None else None
    problems = []
    if outcome.startswith("unexpected"):
        problems.append(outcome)
    if case.family == "bytes" and outcome == "accepted" and content_digest(*decoded) != seed.digest:
        problems.append("unexpected:silent-change")  # unsigned byte damage read as a different model
    if seconds > slow:
        problems.append("unexpected:slow")
    if rss_after - rss_before > RSS_JUMP:
        problems.append("unexpected:rss")
    bound = memory_bound(case.blob, max_weights)
    if peak is not None:
        stats.memory_samples += 1
        stats.memory_peak_ratio = max(stats.memory_peak_ratio, peak / bound)
        if peak > bound:
            problems.append("unexpected:memory")
    if load_outcome is not None:
        stats.load[load_outcome] += 1
        if load_outcome.startswith("unexpected"):
            problems.append(f"unexpected:load:{type(load_exc).__name__}")
        if load_outcome == "accepted" and outcome != "accepted":
            stats.load_after_refusal += 1
            problems.append("unexpected:load-accepted-refused-file")

    stats.cases += 1
    stats.package[outcome] += 1
    stats.reference[ref_outcome] += 1
    reached = stage[0]
    if reached == "read" and exc is not None:  # which part of read_pemn refused it
        message = str(exc)
        reached = (
            "read: data checksum"
            if "data checksum" in message
            else "read: header hash"
            if "header checksum" in message or "header_sha256" in message
            else "read: container"
            if type(exc).__name__ == "ContainerError"
            else "read: header"
        )
    stats.stage[reached] += 1
    stats.family[case.family] += 1
    stats.family_accepted[case.family] += outcome == "accepted"
    for label in case.labels:
        stats.mutators[label.split(":")[0]] += 1
    stats.max_case_seconds = max(stats.max_case_seconds, seconds)
    if ref_outcome.startswith("unexpected") or ref_seconds > slow:
        stats.reference_unexpected[ref_outcome if ref_outcome.startswith("unexpected") else "slow"] += 1

    disagreement = None
    pkg_ok, ref_ok = outcome == "accepted", ref_outcome == "accepted"
    if not outcome.startswith("unexpected") and not ref_outcome.startswith("unexpected"):
        if pkg_ok != ref_ok:
            stats.accept_refuse_disagreements += 1
            disagreement = "accept/refuse"
        elif pkg_ok:
            same = [n for n, _ in weights] == list(ref_out["weights"]) and all(
                w.tobytes() == ref_out["weights"][n].tobytes() for n, w in weights
            )
            if not same:
                stats.bit_disagreements += 1
                disagreement = "bits"
            else:
                stats.agree += 1
        elif outcome.split(":")[1] != ref_outcome.split(":")[1]:
            stats.class_disagreements[f"{outcome.split(':')[1]} / {ref_outcome.split(':')[1]}"] += 1
            stats.agree += 1
            if len(stats.class_examples) < 20:
                stats.class_examples.append(
                    {
                        "case": case.index,
                        "seed": case.seed_name,
                        "mutations": case.labels,
                        "package": f"{outcome}: {str(exc)[:200]}",
                        "reference": f"{ref_outcome}: {str(ref_exc)[:200]}",
                    }
                )
        else:
            stats.agree += 1

    record = {
        "peak": peak,
        "case": case.index,
        "seed": case.seed_name,
        "family": case.family,
        "mutations": case.labels,
        "package": outcome,
        "reference": ref_outcome,
        "load": load_outcome,
        "stage": stage[0],
        "seconds": round(seconds, 4),
        "bytes": len(case.blob),
    }
    if exc is not None:
        record["package_message"] = str(exc)[:300]
    if ref_exc is not None:
        record["reference_message"] = str(ref_exc)[:300]
    if problems or disagreement:
        for p in problems:
            stats.unexpected[p] += 1
        kind = problems[0] if problems else f"disagreement:{disagreement}"
        record["problems"] = problems
        record["disagreement"] = disagreement
        bad = load_exc if (load_exc is not None and not isinstance(load_exc, PemnError)) else exc
        if bad is not None and not isinstance(bad, PemnError):
            record["traceback"] = "".join(traceback.format_exception(type(bad), bad, bad.__traceback__))[-3000:]
        if crash_dir is not None and saved is not None and saved[kind] < MAX_SAVED_PER_CLASS:
            saved[kind] += 1
            folder = crash_dir / kind.replace(":", "_").replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"case{case.index}.bin").write_bytes(case.blob)
            (folder / f"case{case.index}.json").write_text(json.dumps(record, indent=1, default=str))
            record["saved"] = str(folder / f"case{case.index}.bin")
        if len(stats.examples) < 60:
            stats.examples.append({k: v for k, v in record.items() if k != "traceback"})
    return record


def run_fuzz(
    cases: int,
    seed: int = 0,
    *,
    max_weights: int = DEFAULT_MAX_WEIGHTS,
    load_fraction: float = 0.05,
    memory_every: int = 50,
    crash_dir: Path | None = None,
    progress: bool = False,
    slow: float = SLOW_SECONDS,
    start: int = 0,
) -> FuzzStats:
    """Run cases ``start .. start + cases - 1`` of fuzz run ``seed``; returns the counts."""
    import torch

    torch.set_num_threads(1)
    seeds = load_seeds()
    by_name = {s.name: s for s in seeds}
    stats, saved = FuzzStats(), Counter()
    inflight = None
    if crash_dir is not None:
        crash_dir.mkdir(parents=True, exist_ok=True)
        inflight = crash_dir / "inflight.bin"  # survives a hard crash of the interpreter (segfault, OOM kill)
    began = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # float overflow of hostile scales: not our subject
        warnings.simplefilter("ignore", RuntimeWarning)
        _loop(
            seeds,
            by_name,
            stats,
            saved,
            seed,
            start,
            cases,
            load_fraction,
            max_weights,
            memory_every,
            slow,
            crash_dir,
            inflight,
            progress,
            began,
        )
    stats.seconds = time.perf_counter() - began
    if inflight is not None:
        inflight.unlink(missing_ok=True)
    return stats


def _loop(
    seeds,
    by_name,
    stats,
    saved,
    seed,
    start,
    cases,
    load_fraction,
    max_weights,
    memory_every,
    slow,
    crash_dir,
    inflight,
    progress,
    began,
):
    for index in range(start, start + cases):
        case = make_case(seeds, seed, index, load_fraction)
        if inflight is not None:
            inflight.write_bytes(case.blob)
        run_case(
            case,
            by_name,
            stats,
            max_weights=max_weights,
            measure_memory=memory_every > 0 and index % memory_every == 0,
            slow=slow,
            crash_dir=crash_dir,
            saved=saved,
        )
        if progress and (index - start + 1) % 5000 == 0:
            rate = (index - start + 1) / (time.perf_counter() - began)
            print(
                f"  {index - start + 1:,} cases, {rate:,.0f}/s, unexpected {sum(stats.unexpected.values())}, "
                f"disagreements {stats.accept_refuse_disagreements}",
                file=sys.stderr,
                flush=True,
            )


def format_summary(stats: FuzzStats) -> str:
    d = stats.to_dict()
    lines = [
        f"{stats.cases:,} cases in {stats.seconds:.1f} s ({d['cases_per_second'] or 0:,.0f} cases/s)",
        f"package outcomes: {dict(stats.package.most_common())}",
        f"reference outcomes: {dict(stats.reference.most_common())}",
        f"package stage reached: {dict(stats.stage.most_common())}",
        f"pemn.load outcomes: {dict(stats.load.most_common())}",
        f"unexpected outcomes: {sum(stats.unexpected.values())} {dict(stats.unexpected)}",
        f"reader disagreements: accept/refuse {stats.accept_refuse_disagreements}, "
        f"weight bits {stats.bit_disagreements}, "
        f"error class {sum(stats.class_disagreements.values())}",
        f"memory: {stats.memory_samples} traced cases, worst peak {100 * stats.memory_peak_ratio:.1f}% of the bound; "
        f"slowest case {stats.max_case_seconds * 1e3:.0f} ms",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first case index (to continue or split a run)")
    parser.add_argument("--report", type=Path, default=None, help="write the counts as JSON here")
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"), help="inputs of unexpected outcomes")
    parser.add_argument("--max-weights", type=int, default=DEFAULT_MAX_WEIGHTS)
    parser.add_argument("--load-fraction", type=float, default=0.05, help="cases also given to pemn.load")
    parser.add_argument("--memory-every", type=int, default=50, help="tracemalloc every N-th case (0: never)")
    parser.add_argument("--replay", type=int, default=None, metavar="CASE", help="run one case and show everything")
    args = parser.parse_args(argv)
    if args.replay is not None:
        import torch

        torch.set_num_threads(1)
        seeds = load_seeds()
        case = make_case(seeds, args.seed, args.replay, args.load_fraction)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            record = run_case(
                case, {s.name: s for s in seeds}, FuzzStats(), max_weights=args.max_weights, measure_memory=True
            )
        print(json.dumps(record, indent=1, default=str))
        return 1 if record.get("problems") or record.get("disagreement") else 0
    stats = run_fuzz(
        args.cases,
        args.seed,
        max_weights=args.max_weights,
        load_fraction=args.load_fraction,
        memory_every=args.memory_every,
        crash_dir=args.crash_dir,
        progress=True,
        start=args.start,
    )
    print(format_summary(stats))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(
            json.dumps(
                {"seed": args.seed, "start": args.start, "max_weights": args.max_weights, **stats.to_dict()},
                indent=1,
                default=str,
            )
        )
    if stats.unexpected and args.crash_dir:
        print(f"inputs of unexpected outcomes: {args.crash_dir}", file=sys.stderr)
    return 1 if stats.unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())
