"""Mutation fuzzer for the `.pemn` readers (format versions 1 to 3), seeded from the golden vectors.

The seeds are the valid vectors of formats/vectors/valid as written (version 1), each re-laid out as
version 2 (``to_version``), and the valid vectors of formats/vectors/v3/valid as written (version 3: int8
leftovers). Each case draws the version first (a third of the cases each), then a seed of that version.

Every case takes one seed, mutates it with a ``random.Random`` seeded by ``(seed, case)``
(so any case can be replayed alone), and runs

* the package: ``read_pemn`` + ``decode_weights`` + ``verify_fingerprint`` + ``PemnFile.dense_arrays``
  (the leftovers a loader copies, q8 rows decoded), and, for a fraction of the cases, ``pemn.load`` with
  the vector's skeleton or its registry reference, sometimes ``masked=True``;
* the numpy-only reference reader (formats/reference_reader.py) on the same bytes.

The package must end either in success (the fingerprint verified) or in a ``FormatError`` subclass.
Anything else is an **unexpected outcome**: another exception, a case slower than ``--slow`` seconds
(2 s), a traced numpy/Python peak beyond ``memory_bound`` (``tracemalloc`` on every
``--memory-every``-th case), or a jump of the process's max RSS. Its input is saved to
``--crash-dir`` with a JSON note (mutations, traceback) and can be replayed with ``--replay CASE``.
The two readers must also agree on accept/refuse; when both accept they must give the same weight
bits and the same decoded leftovers (keys, dtypes, shapes, bits: ``dense_disagreements``), and when both
refuse, the error class is compared too (informational: a mutated file often has several faults, and the
spec pins the class only for a file with exactly one). A case with exactly one fault whose mutator knows
the outcome the spec gives it (``Case.expect``: the version 2 and version 3 mutators, derived keys removed
from version 1 files) must get that outcome: a mismatch is reported (``expectation_mismatches``).
While formats/reference_reader.py cannot read version 2 (``reference_reads_v2``), files labelled version 2
are left out of the cross-check (``reference_skipped``) and their fingerprints are recomputed by the package.

Mutations (``MUTATORS``): bit flips, byte insertions and deletions, truncation at every structural
boundary (inside the 8-byte length, inside the JSON header, at and around each tensor boundary), the
header length itself; edits of the safetensors entries (dtype, shape, offsets, extra/missing keys and
tensors, re-typed or resized tensors, another layout order); ``__metadata__`` edits (format, version,
hash, non-string values); PEMN header edits at any JSON path (type changes, sizes, shapes, codec names,
huge counts, deleted/added keys, swapped list items, textual edits: duplicate keys, NaN, deep nesting,
huge integers, ``144.0`` for ``144``). Version 2 (formats/pemn-v2.md): ``pemn.header_bytes`` edits
(missing, not 1 to 9 ASCII digits, huge, off by one, zero, leading zeros); ``header`` tensor edits
(truncated, bit flips, bytes appended, hand-made stored blocks, other compressor settings, padding bits
after the final block, a stream of another length, an inflation bomb, zlib/gzip wrappers, another dtype or
shape, missing, text bytes that are not UTF-8); derived keys added back with their derived value or a
wrong one (``generator``, ``banks``, ``bank``, raw ``bytes``, ``scale``) and removed from version 1 files;
the version label swapped against the layout. Version 3 (formats/pemn-v3.md, ``m_v3_q8``): a q8 row's
outlier count or number of values changed, with the four q8 tensors left as they were or re-made to match;
``dense.dtype`` other than ``int8`` over q8 rows; an int8 file labelled version 2; a q8 tensor missing,
retyped, resized or 2-D; a NaN or infinite ``lo``/``step``, or another finite one; outlier positions
swapped, repeated, at ``n`` or beyond, or moved; random codes and outlier values (valid: the decoded
leftovers compared); rows of three or five elements; q8 rows stored as f16/f32 instead (q8 tensors left
over or not); in files without q8 rows, floating leftovers quantized into q8 rows (under ``int8`` or not),
``dtype`` and label swaps, stray q8 tensors; version 1 and 2 files quantized, laid out as version 3 or
kept as they were, or labelled 3. Structured edits re-sign ``pemn.header_sha256`` (versions 2 and 3:
with ``pemn.header_bytes``) and ``checksums.data`` (versions 2 and 3: over the buffer without ``header``)
most of the time, so that they reach the deep checks; semantic edits (seed, scale, distribution, stored values,
re-encoded masks with any codec/k/invert) also recompute the fingerprint with the reference reader, so
the file is valid again and both readers' weight bits are compared. Files are unpacked, edited and
repacked by this module's own file model (``parse_file``, ``Candidate``: struct, json, zlib, hashlib),
never by the package writer; benchmarks/hostile_files.py builds its files with it too.

    PYTHONPATH=. python benchmarks/fuzz_loader.py --cases 2000 --seed 1 --report /tmp/fuzz.json
    PYTHONPATH=. python benchmarks/fuzz_loader.py --seed 1 --replay 1234     # one case, verbosely
    PYTHONPATH=. python benchmarks/fuzz_loader.py --cases 0 --write-seeds /tmp/seeds   # the seed files only
"""

from __future__ import annotations

import argparse
import copy
import functools
import gzip
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
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/fuzz_loader.py` from a checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pemn_compress.errors import FormatError, PemnError  # noqa: E402
from pemn_compress.fileformat.reader import decode_masks, decode_weights, read_pemn, verify_fingerprint  # noqa: E402

VECTORS = ROOT / "formats" / "vectors"
DEFAULT_MAX_WEIGHTS = 1 << 20  # both readers' limit in the fuzzer: accepted files stay cheap to decode
SLOW_SECONDS = 2.0  # a case slower than this (one reader call) is an unexpected outcome
HARD_TIMEOUT = 30  # seconds: the case is abandoned (SIGALRM) and recorded as a hang
RSS_JUMP = 512 << 20  # a max-RSS increase beyond this in one case is an unexpected outcome
MAX_SAVED_PER_CLASS = 25  # crash-folder inputs kept per outcome class

__all__ = [
    "Candidate",
    "DenseRow",
    "FuzzStats",
    "MUTATORS",
    "Seed",
    "compact_header",
    "deflate_raw",
    "dense_rows",
    "is_q8_row",
    "parse_file",
    "q8_row",
    "set_dense_rows",
    "reference_reads_v2",
    "stored_stream",
    "to_version",
    "load_seeds",
    "make_case",
    "memory_bound",
    "reference_reader",
    "run_case",
    "run_fuzz",
    "write_seeds",
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
    """A valid file, parsed: tensors (name -> (dtype, shape, bytes)) in layout order, metadata, header.

    ``version`` is the file's layout (1: the header text in the metadata; 2: deflated in the ``header``
    tensor, kept in ``tensors`` as a placeholder that ``Candidate.encode`` fills); ``full_header`` is the
    header with every derived key (the version 1 form), which a version 2 header leaves some of out.
    """

    name: str
    blob: bytes
    tensors: dict
    metadata: dict
    header: dict
    load: dict
    masks: dict = field(default_factory=dict)  # layer name -> decoded bool mask (flat), from the reference reader
    digest: str = ""  # content_digest of the valid file
    version: int = 1
    full_header: dict = field(default_factory=dict)


def load_seeds(
    folder: Path = VECTORS / "valid", versions: tuple[int, ...] = (1, 2, 3), v3_folder: Path = VECTORS / "v3" / "valid"
) -> list[Seed]:
    """Every valid vector of ``folder`` (version 1) and, if 2 is in ``versions``, the same file re-laid out
    as version 2 by ``to_version`` (derived keys left out, header deflated); if 3 is, every valid vector of
    ``v3_folder`` as committed (version 3: int8 leftovers). ``make_case`` draws the version first, so each
    version gets a third of the cases whatever its number of seeds."""
    expected = json.loads((folder / "expected.json").read_text())["vectors"]
    ref = reference_reader()
    seeds = []
    for name in sorted(expected):
        original = (folder / name).read_bytes()
        masks = {k: v.reshape(-1).copy() for k, v in ref.read(original)["masks"].items()}
        full = parse_file(original)[3]
        for version in (v for v in versions if v < 3):
            blob = original if version == 1 else to_version(original, version)
            layout, tensors, metadata, header = parse_file(blob)
            digest = content_digest(*_package(blob, DEFAULT_MAX_WEIGHTS, ["read"]))
            label = name if version == 1 else f"v{version}/{name}"
            seeds.append(
                Seed(label, blob, tensors, metadata, header, expected[name]["load"], masks, digest, layout, full)
            )
    if 3 in versions:
        expected = json.loads((v3_folder / "expected.json").read_text())["vectors"]
        for name in sorted(expected):
            blob = (v3_folder / name).read_bytes()
            out = ref.read(blob)
            masks = {k: v.reshape(-1).copy() for k, v in out["masks"].items()}
            full = json.loads(json.dumps(out["header"]))  # every derived key filled in (the version 1 form)
            layout, tensors, metadata, header = parse_file(blob)
            digest = content_digest(*_package(blob, DEFAULT_MAX_WEIGHTS, ["read"]))
            seeds.append(Seed(f"v3/{name}", blob, tensors, metadata, header, expected[name]["load"], masks, digest,
                              layout, full))
    return seeds


def write_seeds(folder: Path) -> None:
    """Every seed as a file: ``folder/<vector>.pemn`` (version 1, as committed), ``folder/v2/<vector>.pemn``
    and ``folder/v3/<vector>.pemn`` (the version 3 vectors, as committed)."""
    for seed in load_seeds():
        path = Path(folder) / seed.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(seed.blob)


# ---------------------------------------------------------------------------------------------- file model
# `.pemn` files of every version (formats/pemn-v1.md to pemn-v3.md; version 3 is laid out and signed as
# version 2, ``layout >= 2`` below), unpacked and repacked here
# with struct, json, zlib and hashlib only: the files the fuzzer and benchmarks/hostile_files.py make are
# never the package writer's (only the valid base files are).
KEY_FORMAT, KEY_VERSION, KEY_HEADER, KEY_HEADER_SHA256 = "format", "pemn.version", "pemn.header", "pemn.header_sha256"
KEY_HEADER_BYTES = "pemn.header_bytes"  # version 2: the length of the header text once inflated
HEADER_TENSOR = "header"  # version 2: the header text as one raw DEFLATE stream, a U8 vector
MAX_HEADER_BYTES = 100 * 1024 * 1024
AUTO = None  # the shape of a header tensor laid out from its stream: [len(stream) // itemsize]
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value) -> str:
    """Canonical JSON (v1 section 6.1): sorted keys, no whitespace, ASCII escapes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def deflate_raw(
    data: bytes,
    level: int = 9,
    window_bits: int = -15,
    mem_level: int = 8,
    strategy: int = zlib.Z_DEFAULT_STRATEGY,
    flush_every: int = 0,
    final: bool = True,
) -> bytes:
    """``data`` as raw DEFLATE (v2 section 3's writer settings by default). ``flush_every``: a sync flush
    (an empty stored block) after every that many input bytes; ``final=False``: end with a sync flush and
    no final block (a prefix another stream can continue at a byte boundary)."""
    packer = zlib.compressobj(level, zlib.DEFLATED, window_bits, mem_level, strategy)
    if flush_every:
        steps = range(0, len(data), flush_every)
        body = b"".join(packer.compress(data[i : i + flush_every]) + packer.flush(zlib.Z_SYNC_FLUSH) for i in steps)
    else:
        body = packer.compress(data)
    return body + (packer.flush() if final else packer.flush(zlib.Z_SYNC_FLUSH))


def stored_stream(data: bytes, sizes: tuple[int, ...] = (), final: bool = True) -> bytes:
    """``data`` as raw DEFLATE stored blocks (RFC 1951 section 3.2.4), made by hand: the first blocks
    hold ``sizes[i]`` bytes each (0: an empty block), the rest follows in blocks of at most 65535 bytes;
    the last block is the final one (``final=False``: none is, the stream is cut short)."""
    chunks, at = [], 0
    for size in sizes:
        chunks.append(data[at : at + size])
        at += len(chunks[-1])
    while at < len(data) or not chunks:
        chunks.append(data[at : at + 65535])
        at += 65535
    out = bytearray()
    for i, chunk in enumerate(chunks):
        out.append(1 if final and i == len(chunks) - 1 else 0)  # BFINAL, BTYPE 00; the rest of the byte: padding
        out += struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk
    return bytes(out)


def set_padding_bits(stream: bytes) -> bytes:
    """``stream`` with the unused high bits of its last byte (after the final block's end) set to 1,
    found by trial: a reader ignores them (v2 section 3, item 4)."""
    if not stream:
        return stream
    try:
        want = zlib.decompressobj(-15).decompress(stream)
    except zlib.error:  # an earlier edit of this case broke the stream: nothing to pad
        return stream
    out = bytearray(stream)
    for bit in range(7, -1, -1):
        trial = bytearray(out)
        trial[-1] |= 1 << bit
        unpacker = zlib.decompressobj(-15)
        try:
            same = unpacker.decompress(bytes(trial)) == want and unpacker.eof and not unpacker.unused_data
        except zlib.error:
            same = False
        if not same:
            break
        out = trial
    return bytes(out)


@functools.lru_cache(maxsize=4)
def zero_bomb(size: int = 16 << 20) -> bytes:
    """A raw DEFLATE stream of ``size`` zero bytes (about size / 1000 bytes long): appended to a
    non-final prefix, the inflated text runs ``size`` bytes past what the prefix holds."""
    return deflate_raw(bytes(size))


def inflate_bounded(stream: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of what ``stream`` inflates to (b"" for a broken stream)."""
    try:
        return zlib.decompressobj(-15).decompress(stream, max(1, limit))
    except zlib.error:
        return b""


def layout_key(name: str, dtype: str) -> tuple:
    """The writers' layout order (v1 section 5.7): descending item size, then name."""
    return (-ITEMSIZE.get(dtype, 1), name)


def kaiming(shape: list[int]) -> float:
    """``float32(sqrt(2 / fan_in))``, ``fan_in = max(1, prod(shape[1:]))`` (v1 section 9.3)."""
    return float(np.float32(math.sqrt(2.0 / max(1, math.prod(shape[1:])))))


def rule_scales(header: dict) -> list[float]:
    """Each layer's scale by the writers' rule (v1 section 9.3; v2 section 4 leaves a scale equal to it out)."""
    config = header.get("config", {})
    shapes = [layer["shape"] for layer in header["layers"]]
    if config.get("strategy", "onelayer") in ("mp", "rp") and not config.get("rescale", True):
        largest = max(shapes, key=math.prod)  # the first of N_max weights
        return [kaiming(largest)] * len(shapes)
    return [kaiming(shape) for shape in shapes]


def _same_float32(a, b) -> bool:
    return (
        isinstance(a, float) and isinstance(b, float) and np.float32(a).view(np.uint32) == np.float32(b).view(np.uint32)
    )


def compact_header(full: dict) -> dict:
    """The version 2 form of a complete header (v2 section 4): ``generator``, ``banks``, each layer's
    ``bank``, a raw layer's ``bytes`` and a scale equal to the writers' rule left out."""
    out = copy.deepcopy(full)
    out.pop("generator", None)
    out.pop("banks", None)
    for layer, rule in zip(out["layers"], rule_scales(out), strict=True):
        layer.pop("bank", None)
        if layer.get("codec") == "raw":
            layer.pop("bytes", None)
        if _same_float32(layer.get("scale"), rule):
            del layer["scale"]
    return out


def layer_bytes(layer: dict) -> int:
    """A layer's coded mask length: ``bytes``, or ``ceil(n / 8)`` when a raw layer leaves it out (v2)."""
    if "bytes" in layer:
        return layer["bytes"]
    return (math.prod(layer["shape"]) + 7) // 8


def parse_file(blob: bytes) -> tuple[int, dict, dict, dict]:
    """(layout version, tensors name -> (dtype, shape, bytes) in buffer order, metadata, PEMN header) of
    a valid file. A version 2 file's ``header`` tensor is a placeholder: ``Candidate.encode`` remakes it."""
    (n,) = struct.unpack("<Q", blob[:8])
    entries = json.loads(blob[8 : 8 + n])
    metadata = entries.pop("__metadata__")
    data = blob[8 + n :]
    order = sorted(entries, key=lambda t: entries[t]["data_offsets"])
    tensors = {
        t: (entries[t]["dtype"], list(entries[t]["shape"]), data[slice(*entries[t]["data_offsets"])]) for t in order
    }
    version = int(metadata[KEY_VERSION])
    if version >= 2:
        header = json.loads(zlib.decompress(tensors[HEADER_TENSOR][2], -15))
        tensors[HEADER_TENSOR] = ("U8", AUTO, b"")
    else:
        header = json.loads(metadata[KEY_HEADER])
    return version, tensors, metadata, header


def to_version(blob: bytes, version: int) -> bytes:
    """A valid file re-laid out as format ``version``. Version 2: the header without its derived keys
    (``compact_header``), deflated into the ``header`` tensor, ``pemn.header_bytes`` set, the data
    checksum over the buffer without ``header``: byte for byte what the package writer gives (same
    zlib). Version 1 needs a header with every key (a version 2 header that kept its derived keys)."""
    c = Candidate.from_blob(blob)
    c.set_layout(version)
    if version >= 2:
        c.header = compact_header(c.header)
    return c.encode()


class Candidate:
    """A file being mutated. ``encode`` lays the tensors out in ``order``, signs and serializes it, in
    the layout of ``layout`` (1, 2 or 3, the last two alike; the ``pemn.version`` label is the metadata's,
    which may differ)."""

    def __init__(self, seed: Seed):
        self.seed = seed
        self.tensors = {k: [d, s if s is AUTO else list(s), bytes(b)] for k, (d, s, b) in seed.tensors.items()}
        self.order = list(seed.tensors)
        self.metadata = dict(seed.metadata)
        self.header = copy.deepcopy(seed.header)
        self.layout = seed.version
        self.entry_edits = []  # callables(entries) applied after layout: break the container on purpose
        self.header_text_edits = []  # callables(text) -> text on the canonical header text
        self.container_text_edits = []  # callables(text) -> text on the safetensors JSON text
        self.header_stream = None  # v2: callable(text bytes) -> stream, instead of deflate_raw
        self.header_stream_edits = []  # v2: callables(stream, text bytes) -> stream
        self.header_bytes_edit = None  # v2: callable(text length) -> pemn.header_bytes (None: the key removed)
        self.header_raw_edits = []  # v2: callables(text bytes) -> bytes, before hashing and deflating
        self.sign_header = True
        self.sign_data = True
        self.refingerprint = False
        self.expect = None  # outcomes ("accepted" or error class names) a mutation with one fault must give

    @classmethod
    def from_blob(cls, blob: bytes, name: str = "") -> Candidate:
        """A valid file of either version, to edit and re-encode (``header``, ``metadata``, ``tensors``)."""
        version, tensors, metadata, header = parse_file(blob)
        return cls(Seed(name, blob, tensors, metadata, header, {}, version=version, full_header=header))

    def set_layout(self, version: int) -> None:
        """Lay the file out as ``version`` (label, metadata keys, ``header`` tensor); the header is kept."""
        if version >= 2 and self.layout < 2:
            self.tensors[HEADER_TENSOR] = ["U8", AUTO, b""]
            self.add_to_order(HEADER_TENSOR)
            self.metadata.pop(KEY_HEADER, None)
            self.metadata[KEY_HEADER_BYTES] = "0"  # set by encode
        elif version < 2 and self.layout >= 2:
            self.tensors.pop(HEADER_TENSOR, None)
            self.order = [t for t in self.order if t != HEADER_TENSOR]
            self.metadata.pop(KEY_HEADER_BYTES, None)
            self.metadata[KEY_HEADER] = ""  # set by encode
        self.metadata[KEY_VERSION] = str(version)
        self.metadata = dict(sorted(self.metadata.items()))
        self.layout = version

    def add_to_order(self, name: str) -> None:
        """Put tensor ``name`` where a writer lays it out (the others keep their order)."""
        self.order = [t for t in self.order if t != name]
        key = layout_key(name, self.tensors[name][0])
        at = next(
            (i for i, t in enumerate(self.order) if t in self.tensors and layout_key(t, self.tensors[t][0]) > key),
            len(self.order),
        )
        self.order.insert(at, name)

    def data(self) -> bytes:
        """What ``checksums.data`` covers: the data buffer, without the ``header`` tensor in layout 2."""
        skip = HEADER_TENSOR if self.layout >= 2 else None
        return b"".join(self.tensors[t][2] for t in self.order if t in self.tensors and t != skip)

    def encode(self, fingerprint: str | None = None) -> bytes:
        header = copy.deepcopy(self.header)
        if isinstance(header, dict):
            if self.sign_data and isinstance(header.get("checksums"), dict):
                header["checksums"]["data"] = sha256(self.data())
            if fingerprint is not None and isinstance(header.get("fingerprint"), dict):
                header["fingerprint"]["value"] = fingerprint
        text = canonical_json(header)
        for edit in self.header_text_edits:
            text = edit(text)
        encoded = text.encode("utf-8", "surrogatepass")
        metadata = dict(self.metadata)
        tensors = self.tensors
        if self.layout >= 2:
            for raw_edit in self.header_raw_edits:
                encoded = raw_edit(encoded)
            tensors = dict(self.tensors)
            if HEADER_TENSOR in tensors:
                stream = self.header_stream(encoded) if self.header_stream else deflate_raw(encoded)
                for stream_edit in self.header_stream_edits:
                    stream = stream_edit(stream, encoded)
                dtype, shape, _ = tensors[HEADER_TENSOR]
                size = ITEMSIZE.get(dtype, 1)
                stream += bytes(-len(stream) % size)
                if shape is AUTO:
                    shape = [len(stream) // size]
                elif callable(shape):
                    shape = shape(len(stream) // size)
                tensors[HEADER_TENSOR] = [dtype, shape, stream]
            if KEY_HEADER_BYTES in metadata:
                metadata[KEY_HEADER_BYTES] = str(len(encoded))
            if self.header_bytes_edit is not None:
                value = self.header_bytes_edit(len(encoded))
                if value is None:
                    metadata.pop(KEY_HEADER_BYTES, None)
                else:
                    metadata[KEY_HEADER_BYTES] = value
        elif KEY_HEADER in metadata or self.sign_header:
            metadata[KEY_HEADER] = text
        if self.sign_header and KEY_HEADER_SHA256 in metadata:
            metadata[KEY_HEADER_SHA256] = sha256(encoded)
        entries, offset = {}, 0
        for name in self.order:
            if name not in tensors:
                continue
            dtype, shape, raw = tensors[name]
            entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
            offset += len(raw)
        for edit in self.entry_edits:
            try:
                edit(entries)
            except (KeyError, IndexError, TypeError, ValueError):  # an entry an earlier edit already broke
                pass
        data = b"".join(tensors[t][2] for t in self.order if t in tensors)
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
    "bytes": lambda rng, layer, c: rng.choice(
        [layer_bytes(layer) + 1, layer_bytes(layer) - 1, 0, 2**31, -1, 2**40, 10**12]
    ),
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
        dense["dtype"] = rng.choice(["float32", "float16", "int8", "bfloat16", "float64", None])
        return "dense.dtype"
    if choice == 1:
        dense["folded_batchnorm"] = rng.choice([[], ["0"], ["\x1b[31m"], "0", [0], [""], ["1", "1"]])
        return "dense.folded_batchnorm"
    table = dense.get("tensors")
    if not isinstance(table, list) or not table:
        dense["tensors"] = rng.choice([[], None, [["x", [1], "f32"]]])
        return "dense.tensors"
    item = rng.choice(table)
    if isinstance(item, list) and len(item) in (3, 4):  # version 3: a q8 row has a fourth element
        j = rng.randrange(len(item))
        item[j] = rng.choice(
            [
                [tweak(rng, item[0]), "", "\x1b[0m", 5],
                [[], [0], [2**40], [-1], item[1] + [1], [1] * 9, "3"],
                ["f32", "f16", "i64", "f64", None, "q8"],
                [tweak(rng, item[-1]), -1, 2**16, 0.0, True],
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
        c.metadata.pop(rng.choice(["format", KEY_VERSION, KEY_HEADER, KEY_HEADER_SHA256, KEY_HEADER_BYTES]), None)
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
    # a version 2 header tensor's bytes are made at encoding: m_v2_header_tensor resizes and retypes it
    names = [n for n in c.tensors if kind not in (0, 1) or c.layout < 2 or n != HEADER_TENSOR]
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
                "dense.q8",
                "dense.q8_index",
                "masks2",
                HEADER_TENSOR,
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


# ---- version 2: the declared header size, the header tensor, derived keys, the version label
# Each sets ``c.expect``: the outcomes the spec allows when it is a case's only fault (checked by run_case).


def m_v2_header_bytes(rng, c: Candidate):
    """``pemn.header_bytes``: missing, not 1 to 9 ASCII digits, huge, off by one, zero, leading zeros.
    In a version 1 file it is an extra metadata key, which readers ignore."""
    kind = rng.randrange(6)
    if kind == 0:
        c.header_bytes_edit, expect = (lambda n: None), "MissingKeyError"
    elif kind == 1:
        bad = rng.choice(["", " ", "12a", "-1", "+5", "1e3", "0x10", "12.0", "\u0661\u0662", "\uff11\uff12", " 7"])
        c.header_bytes_edit, expect = (lambda n, bad=bad: bad), "HeaderError"
    elif kind == 2:
        value = rng.choice(["999999999", str(MAX_HEADER_BYTES + 1), str(MAX_HEADER_BYTES), "1000000000", "9" * 40])
        c.header_bytes_edit = lambda n, value=value: value
        expect = "HeaderError" if len(value) > 9 or int(value) == MAX_HEADER_BYTES else "LimitError"
    elif kind == 3:
        delta = rng.choice([-1, 1])
        c.header_bytes_edit, expect = (lambda n, delta=delta: str(n + delta)), "HeaderError"
    elif kind == 4:
        c.header_bytes_edit, expect = (lambda n: "0"), "HeaderError"
    else:  # "0042": still 1 to 9 ASCII digits
        zeros = rng.choice([1, 2, 5])
        c.header_bytes_edit = lambda n, zeros=zeros: "0" * zeros + str(n)
        expect = "accepted" if zeros + len(str(len(canonical_json(c.header)))) <= 9 else "HeaderError"
    c.expect = (expect if c.layout >= 2 else "accepted",)
    return f"{kind}"


def m_v2_header_tensor(rng, c: Candidate):
    """The ``header`` tensor: truncated, flipped, extended, another valid stream (hand-made stored
    blocks, other compressor settings, padding bits set), a stream of another length, an inflation
    bomb, a zlib or gzip wrapper, a wrong dtype or shape, missing. In a version 1 file: an unknown tensor."""
    if c.layout < 2:
        text = canonical_json(c.header).encode("utf-8", "surrogatepass")
        stream = deflate_raw(text)
        c.tensors[HEADER_TENSOR] = ["U8", [len(stream)], stream]
        c.add_to_order(HEADER_TENSOR)
        c.metadata[KEY_HEADER_BYTES] = str(len(text))
        c.expect = ("HeaderError",)  # row 21 of version 1: a tensor the header does not describe
        return "v1"
    if HEADER_TENSOR not in c.tensors:  # an earlier mutation removed it
        c.tensors[HEADER_TENSOR] = ["U8", AUTO, b""]
        c.add_to_order(HEADER_TENSOR)
    kind = rng.randrange(len(HEADER_TENSOR_EDITS))
    c.expect = HEADER_TENSOR_EDITS[kind](rng, c)
    return f"{kind}"


# Each edit of the version 2 header tensor returns the outcomes the spec allows a file with only that fault
# (None: any). HeaderError is a broken stream or text.
def _ht_cut(rng, c: Candidate):
    """Cut short: at a fixed end, a fraction of the stream."""
    where = rng.choice([0, 1, -1, -2, 0.5, rng.random()])
    c.header_stream_edits.append(
        lambda s, t, where=where: s[: int(where * len(s)) if isinstance(where, float) else where]
    )
    return ("HeaderError",)


def _ht_flip(rng, c: Candidate):
    """Bit flips: broken, another text (header hash), or a padding bit (ignored)."""
    spots = [(rng.random(), rng.randrange(8)) for _ in range(rng.choice([1, 1, 2, 4]))]

    def flip(s, t, spots=spots):
        out = bytearray(s)
        for where, bit in spots:
            out[int(where * len(out))] ^= 1 << bit
        return bytes(out)

    c.header_stream_edits.append(flip)
    return ("accepted", "HeaderError", "ChecksumError")


def _ht_trailing(rng, c: Candidate):
    """Bytes after the final block."""
    junk = rng.choice([b"\x00", b"\x03\x00", bytes(rng.getrandbits(8) for _ in range(7)), deflate_raw(b"{}")])
    c.header_stream_edits.append(lambda s, t, junk=junk: s + junk)
    return ("HeaderError",)


def _ht_stored(rng, c: Candidate):
    """Hand-made stored blocks, some empty: valid; or no final block; or LEN != ~NLEN."""
    sizes = tuple(rng.choice([0, 0, 1, 7, 100, 1000]) for _ in range(rng.randrange(4)))
    variant = rng.choice(["valid", "valid", "valid", "no-final", "nlen"])
    c.header_stream = lambda t, sizes=sizes, variant=variant: stored_stream(t, sizes, final=variant != "no-final")
    if variant == "nlen":
        c.header_stream_edits.append(lambda s, t: s[:3] + bytes([s[3] ^ 1]) + s[4:])
    return ("accepted",) if variant == "valid" else ("HeaderError",)


def _ht_settings(rng, c: Candidate):
    """Another compressor setting (any valid DEFLATE stream is accepted)."""
    settings = dict(
        level=rng.randrange(10),
        window_bits=-rng.randrange(9, 16),
        mem_level=rng.randrange(1, 10),
        strategy=rng.choice([zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE, zlib.Z_FIXED]),
        flush_every=rng.choice([0, 0, 1, 64, 1000]),
    )
    c.header_stream = lambda t, settings=settings: deflate_raw(t, **settings)
    return ("accepted",)


def _ht_length(rng, c: Candidate):
    """A stream of another length than pemn.header_bytes declares."""
    k = rng.choice([1, 2, 100])
    if rng.random() < 0.5:
        c.header_stream = lambda t, k=k: deflate_raw(t + b" " * k)
    else:
        c.header_stream = lambda t, k=k: deflate_raw(t[:-k])
    return ("HeaderError",)


def _ht_bomb(rng, c: Candidate):
    """An inflation bomb: the header, then 16 MiB of zeros (a 16 KB stream)."""
    if rng.random() < 0.7:
        c.header_stream = lambda t: deflate_raw(t, final=False) + zero_bomb()
    else:
        c.header_stream = lambda t: zero_bomb()
    return ("HeaderError",)


def _ht_dtype(rng, c: Candidate):
    """Another dtype (row 11c)."""
    c.tensors[HEADER_TENSOR][0] = rng.choice(["I8", "U16", "I16", "F16", "F32", "I64", "U32", "F64", "BOOL"])
    return ("ShapeError",)


def _ht_shape(rng, c: Candidate):
    """Another shape: 2-D, 3-D, or a scalar (one byte)."""
    c.tensors[HEADER_TENSOR][1] = rng.choice(
        [lambda n: [n, 1], lambda n: [1, n], lambda n: [1, 1, n], lambda n: [] if n == 1 else [n, 1]]
    )
    if rng.random() < 0.25:
        c.header_stream_edits.append(lambda s, t: s[:1])
    return ("ShapeError",)


def _ht_missing(rng, c: Candidate):
    del c.tensors[HEADER_TENSOR]
    return ("ShapeError",)


def _ht_wrapped(rng, c: Candidate):
    """A zlib or gzip stream, or raw DEFLATE followed by zlib's Adler-32."""
    c.header_stream = rng.choice([
        lambda t: zlib.compress(t, 9),
        lambda t: gzip.compress(t, mtime=0),
        lambda t: deflate_raw(t) + struct.pack(">I", zlib.adler32(t)),
    ])
    return ("HeaderError",)


def _ht_whitespace(rng, c: Candidate):
    """Whitespace around the JSON text (hashed and declared): any JSON text is valid."""
    pad = rng.choice([" ", "\n", " \t\r\n" * 50])
    before = pad if rng.random() < 0.5 else ""
    c.header_text_edits.append(lambda text, pad=pad, before=before: before + text + pad)
    return ("accepted",)


def _ht_sync_marker(rng, c: Candidate):
    """Empty stored blocks (a sync flush marker) before the stream: valid."""
    c.header_stream_edits.append(lambda s, t: b"\x00\x00\x00\xff\xff" + s)
    return ("accepted",)


def _ht_padding(rng, c: Candidate):
    """The unused bits after the final block, in its last byte, set: ignored."""
    c.header_stream_edits.append(lambda s, t: set_padding_bits(s))
    return ("accepted",)


def _ht_raw_bytes(rng, c: Candidate):
    """The inflated bytes themselves (hashed and declared): not UTF-8, a NUL, a BOM; raw UTF-8 letters."""
    junk = rng.choice([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\x00", b"\xef\xbb\xbf", "\u00e9\u2713".encode()])
    at = rng.choice(["start", "string", "anywhere"])
    where = rng.random()
    c.header_raw_edits.append(lambda t, junk=junk, at=at, where=where: _insert_raw(t, junk, at, where))
    utf8 = junk in (b"\xef\xbb\xbf", "\u00e9\u2713".encode())  # a BOM, or letters: changes a value or breaks
    return ("accepted",) if utf8 and at == "string" else None if utf8 and at == "anywhere" else ("HeaderError",)


HEADER_TENSOR_EDITS = [  # in the order of the labels "m_v2_header_tensor:<index>" (fixed: cases replay)
    _ht_cut, _ht_flip, _ht_trailing, _ht_stored, _ht_settings, _ht_length, _ht_bomb, _ht_dtype, _ht_shape,
    _ht_missing, _ht_wrapped, _ht_whitespace, _ht_sync_marker, _ht_padding, _ht_raw_bytes,
]


def _insert_raw(text: bytes, junk: bytes, at: str, where: float) -> bytes:
    """``junk`` inserted into header text bytes: at the start, inside the producer's name (a free
    string), or anywhere."""
    anchor = b'"producer":{"name":"'
    if at == "string" and anchor in text:
        i = text.index(anchor) + len(anchor)
    else:
        i = 0 if at == "start" else int(where * len(text))
    return text[:i] + junk + text[i:]


def _wrong_bank(rng, bank: dict) -> tuple[dict, str]:
    bank = dict(bank)
    key = rng.choice(["index", "size", "length", "tiling", "stored", "stored-missing", "size-float"])
    if key == "stored-missing":
        del bank["stored"]
        return bank, "MissingKeyError"
    if key == "size-float":
        bank["size"] = float(bank["size"])
    elif key == "tiling":
        bank["tiling"] = {"none": "copy", "copy": "rand", "rand": "none"}.get(bank["tiling"], "none")
    elif key == "stored":
        bank["stored"] = not bank["stored"]
    else:
        bank[key] += 1
    return bank, "HeaderError"


def m_v2_derived(rng, c: Candidate):
    """Derived keys (v2 section 4). Version 2: one added back, with its derived value (valid) or another
    one (refused as version 1 refuses it; a scale is used as stored). Version 1: one removed (required)."""
    header, full = c.header, c.seed.full_header
    key = rng.choice(["generator", "banks", "bank", "bytes", "scale"])
    i = rng.randrange(len(header["layers"]))
    layer = header["layers"][i]
    if c.layout < 2:
        if key in ("generator", "banks"):
            del header[key]
        else:
            if key == "bytes" and layer.get("codec") != "raw":
                key = "bytes.rice"
            del layer[key.split(".")[0]]
        c.expect = ("MissingKeyError",)
        return f"v1.remove.{key}"
    right = rng.random() < 0.35
    expect = "accepted"
    if key == "generator":
        generator = {"name": "philox4x32-10", "seed": header["config"].get("seed", 0)}
        if not right:
            wrong = rng.choice(["seed+1", "name", "seed-str", "seed-float", "no-seed", "no-name"])
            expect = "MissingKeyError" if wrong.startswith("no-") else "HeaderError"
            if wrong == "seed+1":
                generator["seed"] += 1
            elif wrong == "name":
                generator["name"] = "mt19937"
            elif wrong == "seed-str":
                generator["seed"] = str(generator["seed"])
            elif wrong == "seed-float":
                generator["seed"] = float(generator["seed"])
            else:
                del generator[wrong[3:]]
        header["generator"] = generator
    elif key == "banks":
        banks = copy.deepcopy(full["banks"])
        if not right:
            j = rng.randrange(len(banks))
            kind = rng.randrange(4)
            if kind == 0:
                banks[j], expect = _wrong_bank(rng, banks[j])
            elif kind == 1:
                banks, expect = banks[:-1], "HeaderError"
            elif kind == 2:
                banks, expect = banks + [dict(banks[-1], index=len(banks))], "HeaderError"
            else:
                banks, expect = rng.choice([{}, None, "0", [[]]]), "HeaderError"
        header["banks"] = banks
    elif key == "bank":
        bank = full["layers"][i]["bank"]
        if not right:
            bank, expect = rng.choice([bank + 1, -1, bank + 100, str(bank), float(bank), None, True]), "HeaderError"
        layer["bank"] = bank
    elif key == "bytes":
        if layer.get("codec") != "raw":
            del layer["bytes"]  # a rice layer must have it
            c.expect = ("MissingKeyError",)
            return "v2.rice.remove.bytes"
        size = layer_bytes(layer)
        if not right:
            size = rng.choice([size + 1, size - 1, 0, -1, float(size), str(size)])
            expect = "ShapeError" if type(size) is int and size >= 0 else "HeaderError"
        layer["bytes"] = size
    else:
        scale = rule_scales(header)[i] if "scale" not in layer else layer["scale"]
        if not right:
            kind = rng.randrange(3)
            if kind == 0:  # another float32: used as stored; the fingerprint is recomputed, so valid
                scale = random_float32(rng) * rng.choice([1, 1e-30])
                scale = float(np.float32(scale))
                c.refingerprint = True
            elif kind == 1:
                scale, expect = rng.choice([0.1, 1 / 3, 1e-50]), "HeaderError"  # not a float32
            else:
                scale, expect = rng.choice(["1.0", None, [scale], True]), "HeaderError"
        layer["scale"] = scale
        if c.refingerprint:  # a huge scale may break the finite-weights rule (row 23): ShapeError
            expect = "accepted|ShapeError"
    c.expect = tuple(expect.split("|"))
    return f"v2.{'right' if right else 'wrong'}.{key}"


def m_version_swap(rng, c: Candidate):
    """The ``pemn.version`` label against the layout: swapped alone; the layout converted (a version 1
    header is a valid version 2 header, a version 2 one lacks version 1's required keys); a stray
    ``pemn.header`` in a version 2 file (ignored); a version 2 header tensor in a version 1 file."""
    kind = rng.randrange(5)
    v2 = c.layout >= 2
    if kind == 0:
        c.metadata[KEY_VERSION] = "1" if v2 else "2"
        expect = "MissingKeyError"  # pemn.header (read as version 1) or pemn.header_bytes (as version 2)
    elif kind == 1:
        c.set_layout(1 if v2 else 2)
        expect = "MissingKeyError" if v2 else "accepted"  # generator and banks are required in version 1
    elif kind == 2:
        if v2:
            c.metadata[KEY_HEADER] = rng.choice(["", "{", canonical_json(c.seed.full_header), "\x1b[31m"])
        else:
            c.metadata[KEY_HEADER_BYTES] = rng.choice(["0", "999999999", "x"])
        expect = "accepted"  # an extra metadata key
    elif kind == 3:
        if v2:  # a complete header in the metadata, and the header tensor left over: an unknown tensor
            c.header = copy.deepcopy(c.seed.full_header)
            c.set_layout(1)
            stream = deflate_raw(canonical_json(c.header).encode())
            c.tensors[HEADER_TENSOR] = ["U8", [len(stream)], stream]
            c.add_to_order(HEADER_TENSOR)
            expect = "HeaderError"
        else:  # converted as a version 2 writer would
            c.set_layout(2)
            c.header = compact_header(c.header)
            expect = "accepted"
    else:  # version 3 is no longer newer than the readers (m_v3_q8 labels files 3)
        c.metadata[KEY_VERSION] = rng.choice(["4", "10", "999999"])
        expect = "VersionError"
    c.expect = (expect,)
    return f"{kind}"


# ---- version 3 (formats/pemn-v3.md): int8 leftovers, the q8 rows and their four tensors
# ``dense_rows`` unpacks the dense table with its values (a q8 row: codes, lo, step, outlier positions and
# values), ``set_dense_rows`` writes a table back with consistent group tensors: the edits below change one
# thing on purpose and keep the rest valid. Each returns the outcomes the spec gives a file with only that fault.
DENSE_PREFIX = "dense."  # dense.f32, dense.f16, dense.i64: the leftovers of each group
Q8_GROUP = "q8"
Q8_CODES, Q8_RANGE, Q8_INDEX, Q8_VALUE = "dense.q8", "dense.q8_range", "dense.q8_index", "dense.q8_value"
Q8_TENSORS = {Q8_CODES: "U8", Q8_RANGE: "F16", Q8_INDEX: "U16", Q8_VALUE: "F16"}
Q8_MAX_VALUES = 65536  # a q8 row's outlier positions are 16-bit
DENSE_GROUPS = {"f32": "F32", "f16": "F16", "i64": "I64"}
NUMPY_DTYPE = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "U8": "u1", "U16": "<u2"}
F16_NONFINITE = [0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x7FFF, 0xFFFF]  # +inf, -inf, NaNs (payloads, signs)


@dataclass
class DenseRow:
    """One row of ``dense.tensors`` and its values: ``data`` (f32, f16, i64), or the q8 parts."""

    key: str
    shape: list
    group: str
    data: np.ndarray | None = None
    codes: np.ndarray | None = None  # q8: uint8, one per value that is no outlier
    lo: np.float16 | None = None
    step: np.float16 | None = None
    positions: np.ndarray | None = None  # q8: uint16, increasing
    values: np.ndarray | None = None  # q8: float16, the outliers

    @property
    def n(self) -> int:
        return math.prod(self.shape)

    def decoded(self) -> np.ndarray:
        """The row's values as float32 (flat); a q8 row by formats/pemn-v3.md section 4."""
        if self.group != Q8_GROUP:
            return self.data.astype(np.float32)
        out = np.empty(self.n, dtype=np.float32)
        keep = np.ones(self.n, dtype=bool)
        keep[self.positions.astype(np.int64)] = False
        out[keep] = np.float32(self.lo) + self.codes.astype(np.float32) * np.float32(self.step)
        out[~keep] = self.values.astype(np.float32)
        return out


def is_q8_row(item) -> bool:
    return isinstance(item, list) and len(item) == 4 and item[2] == Q8_GROUP


def dense_rows(c: Candidate) -> list[DenseRow]:
    """The dense table of a valid file with each row's values (ValueError/KeyError on a broken one)."""
    taken: Counter = Counter()

    def take(name: str, count: int, dtype: str) -> np.ndarray:
        array = np.frombuffer(c.tensors[name][2], NUMPY_DTYPE[dtype])[taken[name] : taken[name] + count]
        if count < 0 or array.size != count:
            raise ValueError(f"{name}: {count} values past its end")
        taken[name] += count
        return array.copy()

    rows = []
    for key, shape, group, *rest in c.header["dense"]["tensors"]:
        n = math.prod(shape)
        if group == Q8_GROUP:
            (k,) = rest
            lo, step = take(Q8_RANGE, 2, "F16")
            rows.append(DenseRow(key, list(shape), group, codes=take(Q8_CODES, n - k, "U8"), lo=lo, step=step,
                                 positions=take(Q8_INDEX, k, "U16"), values=take(Q8_VALUE, k, "F16")))
        else:
            rows.append(DenseRow(key, list(shape), group, data=take(DENSE_PREFIX + group, n, DENSE_GROUPS[group])))
    return rows


def set_dense_rows(c: Candidate, rows: list[DenseRow]) -> None:
    """``rows`` as the dense table, with every group tensor (and the q8 ones) made to match: a tensor is
    present exactly when a row uses it (v1 section 7.1, v3 section 3), laid out where a writer puts it."""
    c.header["dense"]["tensors"] = [
        [r.key, list(r.shape), r.group] + ([len(r.positions)] if r.group == Q8_GROUP else []) for r in rows
    ]
    q8 = [r for r in rows if r.group == Q8_GROUP]
    parts = {DENSE_PREFIX + g: (dtype, [r.data for r in rows if r.group == g]) for g, dtype in DENSE_GROUPS.items()}
    parts[Q8_CODES] = ("U8", [r.codes for r in q8])
    parts[Q8_RANGE] = ("F16", [np.array([r.lo, r.step], dtype=np.float16) for r in q8])
    parts[Q8_INDEX] = ("U16", [r.positions for r in q8])
    parts[Q8_VALUE] = ("F16", [r.values for r in q8])
    for name, (dtype, arrays) in parts.items():
        if not arrays:  # no row of that group
            c.tensors.pop(name, None)
            continue
        raw = b"".join(np.ascontiguousarray(a, dtype=NUMPY_DTYPE[dtype]).tobytes() for a in arrays)
        new = name not in c.tensors
        c.tensors[name] = [dtype, [len(raw) // ITEMSIZE[dtype]], raw]
        if new:
            c.add_to_order(name)


def random_f16(rng: random.Random, finite: bool = True) -> np.float16:
    """Any float16 (zeros, subnormals, 65504; with ``finite=False`` infinities and NaNs too)."""
    bits = rng.getrandbits(16)
    if finite and (bits >> 10) & 0x1F == 0x1F:
        bits &= ~(1 << 14)  # exponent all ones: clear one of its bits
    return np.uint16(bits).view(np.float16)


def q8_row(rng: random.Random, key: str, shape: list, source: np.ndarray | None = None, k: int | None = None,
           nonfinite: float = 0.1) -> DenseRow:
    """A q8 row of ``shape``: ``k`` outliers (random when None), positions random or (from ``source``) the
    largest magnitudes; lo and step spanning ``source``'s other values where they are finite in float16
    (random finite float16 otherwise), codes rounded onto that grid (random without ``source``); outlier
    values ``source``'s in float16 or random (NaN or an infinity with probability ``nonfinite``). Valid."""
    n = math.prod(shape)
    if k is None:
        k = rng.choice([0, 0, 1, 1, 2, 3, n // 4, n])
    k = max(0, min(k, n, 2000))  # at most 2,000 outliers: 65,536 values cost 64 KB, not 256
    flat = None if source is None else np.asarray(source, dtype=np.float64).reshape(-1)[:n]
    if flat is not None and flat.size == n and rng.random() < 0.6:
        order = np.argsort(-np.abs(np.nan_to_num(flat, nan=np.inf)), kind="stable")
        positions = np.sort(order[:k])
    else:
        positions = np.array(sorted(rng.sample(range(n), k)), dtype=np.int64)
    with np.errstate(all="ignore"):
        if flat is not None and flat.size == n and rng.random() < 0.7:
            values = flat[positions].astype(np.float16)
        else:
            values = np.array([random_f16(rng, rng.random() >= nonfinite) for _ in range(k)], dtype=np.float16)
        keep = np.ones(n, dtype=bool)
        keep[positions] = False
        inliers = flat[keep] if flat is not None and flat.size == n else None
        lo = step = None
        if inliers is not None and inliers.size and np.isfinite(inliers).all():
            lo = np.float16(inliers.min())
            step = np.float16((inliers.max() - float(lo)) / 255)
        if lo is None or not (np.isfinite(lo) and np.isfinite(step)):
            lo, step = random_f16(rng), random_f16(rng)
        if inliers is not None and step > 0 and rng.random() < 0.8:
            codes = np.clip(np.rint((inliers - float(lo)) / float(step)), 0, 255).astype(np.uint8)
        else:
            codes = np.frombuffer(rng.randbytes(n - k), dtype=np.uint8).copy()
    return DenseRow(key, list(shape), Q8_GROUP, codes=codes, lo=lo, step=step,
                    positions=positions.astype(np.uint16), values=values)


def _q8_indices(c: Candidate) -> list[int]:
    return [i for i, item in enumerate(c.header["dense"]["tensors"]) if is_q8_row(item)]


def _quantize_rows(rng, c: Candidate, rows: list[DenseRow], most: int = 3) -> int:
    """Turn 1 to ``most`` floating rows (f32, f16, at most 65,536 values) into valid q8 rows; returns how many."""
    floating = [i for i, r in enumerate(rows) if r.group in ("f32", "f16") and r.n <= Q8_MAX_VALUES]
    if not floating:
        raise ValueError("no floating leftover to quantize")
    chosen = rng.sample(floating, min(len(floating), rng.randint(1, most)))
    for i in chosen:
        rows[i] = q8_row(rng, rows[i].key, rows[i].shape, rows[i].data)
    return len(chosen)


def _upgrade(c: Candidate) -> None:
    """The file laid out and labelled as version 3 (a version 1 header loses its derived keys)."""
    if c.layout < 2:
        c.header = compact_header(c.header)
    c.set_layout(3)


# Edits of a version 3 file with q8 rows (dense.dtype int8)
def _q8_count(rng, c: Candidate):
    """A q8 row's outlier count changed, the tensors left as they are: a length mismatch (ShapeError) when the
    count stays an integer from 0 to n, else HeaderError (v3 section 2, rule 3)."""
    item = c.header["dense"]["tensors"][rng.choice(_q8_indices(c))]
    n, k = math.prod(item[1]), item[3]
    new = rng.choice([k + 1, k - 1, 0, n, n + 1, -1, Q8_MAX_VALUES, 2**32, True, False, float(k), str(k), None, [k]])
    if type(new) is int and new == k:
        new = k + 1
    item[3] = new
    return ("ShapeError",) if type(new) is int and 0 <= new <= n else ("HeaderError",)


def _q8_count_resized(rng, c: Candidate):
    """A q8 row re-made with another outlier count (0 to n), the four tensors resized: valid."""
    rows = dense_rows(c)
    i = rng.choice(_q8_indices(c))
    n = rows[i].n
    rows[i] = q8_row(rng, rows[i].key, rows[i].shape, rows[i].decoded(), rng.choice([0, 1, 2, n // 2, n - 1, n]))
    set_dense_rows(c, rows)
    return ("accepted",)


def _q8_numel(rng, c: Candidate):
    """A q8 row's shape (its number of values n) changed, the tensors left as they are: HeaderError for
    n over 65,536 or below the outlier count (rules 3, 4), else a length mismatch (ShapeError)."""
    item = c.header["dense"]["tensors"][rng.choice(_q8_indices(c))]
    n, k = math.prod(item[1]), item[3]
    new = rng.choice([n + 1, n - 1, 2 * n, n + 256, 0, 1, Q8_MAX_VALUES, Q8_MAX_VALUES + 1, 2**31])
    if new == n:
        new = n + 1
    item[1] = rng.choice([[new], [1, new], [new, 1]])
    return ("HeaderError",) if new > Q8_MAX_VALUES or k > new else ("ShapeError",)


def _q8_numel_resized(rng, c: Candidate):
    """A q8 row of another shape, the tensors resized: valid up to 65,536 values (0 included), HeaderError
    above (rule 4; the codes stored)."""
    rows = dense_rows(c)
    i = rng.choice(_q8_indices(c))
    n = rows[i].n
    new = rng.choice([n + 1, max(1, n - 1), 2 * n, 1, 0] + ([Q8_MAX_VALUES, Q8_MAX_VALUES + 1] * (rng.random() < 0.2)))
    shape = rng.choice([[new], [1, new], [new, 1]] + ([[2, new // 2]] if new % 2 == 0 else []))
    rows[i] = q8_row(rng, rows[i].key, shape, None, rng.choice([0, 1, 2, rows[i].positions.size]))
    set_dense_rows(c, rows)
    return ("accepted",) if new <= Q8_MAX_VALUES else ("HeaderError",)


def _q8_dtype(rng, c: Candidate):
    """dense.dtype other than int8 over q8 rows (rule 1), or not a dtype at all: HeaderError."""
    c.header["dense"]["dtype"] = rng.choice(["float16", "float16", "float32", "bfloat16", "INT8", "int4", "uint8",
                                             None, 8])
    return ("HeaderError",)


def _q8_relabel(rng, c: Candidate):
    """An int8 file labelled version 2 (int8 and q8 unknown there: HeaderError), 1 (no pemn.header:
    MissingKeyError) or 4 (VersionError)."""
    label = rng.choice(["2", "2", "2", "1", "4"])
    c.metadata[KEY_VERSION] = label
    return ({"2": "HeaderError", "1": "MissingKeyError", "4": "VersionError"}[label],)


def _q8_tensor_drop(rng, c: Candidate):
    """One of the four q8 tensors missing (row 19): ShapeError."""
    del c.tensors[rng.choice(list(Q8_TENSORS))]
    return ("ShapeError",)


def _q8_tensor_retype(rng, c: Candidate):
    """A q8 tensor of another dtype, same bytes (row 19, even at length 0): ShapeError."""
    name = rng.choice(list(Q8_TENSORS))
    dtype, _, raw = c.tensors[name]
    new = rng.choice([d for d in ITEMSIZE if d not in (dtype, "BOOL") and len(raw) % ITEMSIZE[d] == 0])
    c.tensors[name] = [new, [len(raw) // ITEMSIZE[new]], raw]
    return ("ShapeError",)


def _q8_tensor_resize(rng, c: Candidate):
    """A q8 tensor a few entries longer or shorter, or 2-D (row 19): ShapeError."""
    name = rng.choice(list(Q8_TENSORS))
    dtype, _, raw = c.tensors[name]
    size = ITEMSIZE[dtype]
    count = len(raw) // size
    kind = rng.choice(["longer", "shorter", "2d"])
    if kind == "2d":
        c.tensors[name][1] = rng.choice([[1, count], [count, 1]])
        return ("ShapeError",)
    delta = rng.choice([1, 1, 2, 8])
    if kind == "shorter" and count >= delta:
        raw = raw[: (count - delta) * size]
    else:
        raw += rng.randbytes(delta * size)
    c.tensors[name] = [dtype, [len(raw) // size], raw]
    return ("ShapeError",)


def _q8_range_nonfinite(rng, c: Candidate):
    """A NaN or an infinity as a row's lo or step (row 23b): ShapeError."""
    raw = bytearray(c.tensors[Q8_RANGE][2])
    at = rng.randrange(len(raw) // 2)
    raw[2 * at : 2 * at + 2] = struct.pack("<H", rng.choice(F16_NONFINITE))
    c.tensors[Q8_RANGE][2] = bytes(raw)
    return ("ShapeError",)


def _q8_range_finite(rng, c: Candidate):
    """Another finite lo or step (negative, zero, subnormal, 65504): valid."""
    raw = bytearray(c.tensors[Q8_RANGE][2])
    at = rng.randrange(len(raw) // 2)
    raw[2 * at : 2 * at + 2] = random_f16(rng).tobytes()
    c.tensors[Q8_RANGE][2] = bytes(raw)
    return ("accepted",)


def _q8_positions(rng, c: Candidate):
    """A row's outlier positions swapped (decreasing), repeated, or the last at n or beyond (row 23b:
    ShapeError); or moved to other increasing positions (valid). A row with too few outliers is first
    re-made (validly) with some."""
    rows = dense_rows(c)
    i = rng.choice(_q8_indices(c))
    row = rows[i]
    kind = rng.choice(["swap", "repeat", "at-n", "beyond", "moved"])
    need = 2 if kind in ("swap", "repeat") else 1
    if row.n < need or (kind in ("at-n", "beyond") and row.n >= Q8_MAX_VALUES):
        kind, need = "moved", 0
    if row.positions.size < need:
        row = rows[i] = q8_row(rng, row.key, row.shape, row.decoded(), rng.randint(need, min(row.n, 4)))
    p = row.positions.astype(np.int64)
    if kind == "moved":
        p = np.array(sorted(rng.sample(range(row.n), p.size)), dtype=np.int64)
    elif kind in ("swap", "repeat"):
        j = rng.randrange(p.size - 1)
        p[j], p[j + 1] = (p[j + 1], p[j]) if kind == "swap" else (p[j], p[j])
    else:
        p[-1] = row.n if kind == "at-n" else rng.randint(row.n, Q8_MAX_VALUES - 1)
    row.positions = p.astype(np.uint16)
    set_dense_rows(c, rows)
    return ("accepted",) if kind == "moved" else ("ShapeError",)


def _q8_codes(rng, c: Candidate):
    """Random bytes in the codes (some, one row's, or all): any code is valid."""
    raw = bytearray(c.tensors[Q8_CODES][2])
    if raw:
        if rng.random() < 0.3:
            raw = bytearray(rng.randbytes(len(raw)))
        else:
            for _ in range(rng.choice([1, 2, 8, 64])):
                raw[rng.randrange(len(raw))] = rng.getrandbits(8)
    c.tensors[Q8_CODES][2] = bytes(raw)
    return ("accepted",)


def _q8_outlier_values(rng, c: Candidate):
    """Other outlier values, NaN and infinities included: any float16 is valid (v3 section 4)."""
    rows = dense_rows(c)
    i = rng.choice(_q8_indices(c))
    row = rows[i]
    if row.positions.size == 0:
        if row.n == 0:
            raise ValueError("a row of no value has no outlier")
        row = rows[i] = q8_row(rng, row.key, row.shape, row.decoded(), rng.randint(1, min(row.n, 4)))
    row.values = np.array([random_f16(rng, rng.random() < 0.6) for _ in range(row.values.size)], dtype=np.float16)
    set_dense_rows(c, rows)
    return ("accepted",)


def _q8_row_width(rng, c: Candidate):
    """A q8 row of three or five elements, or another group's row of four (rule 2): HeaderError."""
    table = c.header["dense"]["tensors"]
    others = [i for i, item in enumerate(table) if not is_q8_row(item)]
    kind = rng.choice(["three", "five", "other-four"] if others else ["three", "five"])
    if kind == "other-four":
        table[rng.choice(others)].append(rng.choice([0, 1]))
    else:
        item = table[rng.choice(_q8_indices(c))]
        if kind == "three":
            del item[3]
        else:
            item.append(rng.choice([0, item[3], "x"]))
    return ("HeaderError",)


def _q8_dequantize(rng, c: Candidate):
    """Every q8 row stored as f16 or f32 instead: a valid int8 file without q8 rows; with the q8 tensors
    left over, tensors the header does not describe (row 21): HeaderError."""
    rows = dense_rows(c)
    for i, row in enumerate(rows):
        if row.group == Q8_GROUP:
            group = rng.choice(["f16", "f32"])
            with np.errstate(all="ignore"):
                data = row.decoded().astype(NUMPY_DTYPE[DENSE_GROUPS[group]])
            rows[i] = DenseRow(row.key, row.shape, group, data=data)
    q8_tensors = {name: list(c.tensors[name]) for name in Q8_TENSORS}
    set_dense_rows(c, rows)
    if rng.random() < 0.5:
        return ("accepted",)
    for name, (dtype, _, raw) in q8_tensors.items():
        raw = raw if rng.random() < 0.5 else b""
        c.tensors[name] = [dtype, [len(raw) // ITEMSIZE[dtype]], raw]
        c.add_to_order(name)
    return ("HeaderError",)


# Edits of a version 3 file without q8 rows
def _v3_quantize(rng, c: Candidate):
    """Floating rows turned into q8 rows: valid under dense.dtype int8 (set here half the time), else
    HeaderError (rule 1)."""
    rows = dense_rows(c)
    _quantize_rows(rng, c, rows)
    set_dense_rows(c, rows)
    if c.header["dense"]["dtype"] != "int8" and rng.random() < 0.5:
        c.header["dense"]["dtype"] = "int8"
    return ("accepted",) if c.header["dense"]["dtype"] == "int8" else ("HeaderError",)


def _v3_dtype(rng, c: Candidate):
    """dense.dtype swapped among int8, float16, float32: valid but for a float32 file with f16 rows."""
    dense = c.header["dense"]
    dense["dtype"] = rng.choice([d for d in ("int8", "float16", "float32") if d != dense["dtype"]])
    f16 = any(item[2] == "f16" for item in dense["tensors"])
    return ("HeaderError",) if dense["dtype"] == "float32" and f16 else ("accepted",)


def _v3_relabel(rng, c: Candidate):
    """Labelled version 2 (valid unless dense.dtype is int8) or 4 (VersionError)."""
    label = rng.choice(["2", "2", "4"])
    c.metadata[KEY_VERSION] = label
    if label == "4":
        return ("VersionError",)
    return ("HeaderError",) if c.header["dense"]["dtype"] == "int8" else ("accepted",)


def _v3_stray_q8_tensors(rng, c: Candidate):
    """The q8 tensors (empty, or some bytes) in a file without q8 rows (row 21): HeaderError."""
    for name in rng.sample(list(Q8_TENSORS), rng.randint(1, 4)):
        dtype = Q8_TENSORS[name]
        raw = b"" if rng.random() < 0.6 else rng.randbytes(ITEMSIZE[dtype] * rng.randint(1, 4))
        c.tensors[name] = [dtype, [len(raw) // ITEMSIZE[dtype]], raw]
        c.add_to_order(name)
    return ("HeaderError",)


def _v3_four_elements(rng, c: Candidate):
    """A row of another group with a fourth element (rule 2): HeaderError."""
    c.header["dense"]["tensors"][rng.randrange(len(c.header["dense"]["tensors"]))].append(rng.choice([0, 1]))
    return ("HeaderError",)


# Edits of a version 1 or 2 file
def _older_quantize(rng, c: Candidate):
    """Floating rows turned into q8 rows and dense.dtype int8: valid once laid out as version 3, HeaderError
    in the version the file has (int8 and q8 unknown there, v3 section 2, rule 5)."""
    rows = dense_rows(c)
    _quantize_rows(rng, c, rows)
    set_dense_rows(c, rows)
    c.header["dense"]["dtype"] = "int8"
    return _upgraded_or_refused(rng, c, 0.6)


def _older_int8(rng, c: Candidate):
    """dense.dtype int8 without a q8 row: valid in version 3, HeaderError in versions 1 and 2."""
    c.header["dense"]["dtype"] = "int8"
    return _upgraded_or_refused(rng, c, 0.5)


def _upgraded_or_refused(rng, c: Candidate, chance: float):
    """With probability ``chance`` lay the file out as version 3, where int8 and q8 are valid (accepted); else
    keep its version, where they are unknown values (HeaderError)."""
    if rng.random() < chance:
        _upgrade(c)
        return ("accepted",)
    return ("HeaderError",)


def _older_relabel(rng, c: Candidate):
    """Labelled version 3: a version 2 file is a valid version 3 file, a version 1 file lacks
    pemn.header_bytes (MissingKeyError); laid out as version 3 by this file model: valid."""
    if rng.random() < 0.5:
        _upgrade(c)
        return ("accepted",)
    c.metadata[KEY_VERSION] = "3"
    return ("accepted",) if c.layout >= 2 else ("MissingKeyError",)


Q8_EDITS = [_q8_count, _q8_count_resized, _q8_numel, _q8_numel_resized, _q8_dtype, _q8_relabel, _q8_tensor_drop,
            _q8_tensor_retype, _q8_tensor_resize, _q8_range_nonfinite, _q8_range_finite, _q8_positions, _q8_codes,
            _q8_codes, _q8_outlier_values, _q8_row_width, _q8_dequantize]
V3_EDITS = [_v3_quantize, _v3_quantize, _v3_dtype, _v3_relabel, _v3_stray_q8_tensors, _v3_four_elements]
OLDER_EDITS = [_older_quantize, _older_quantize, _older_quantize, _older_int8, _older_relabel]


def m_v3_q8(rng, c: Candidate):
    """Version 3's int8 leftovers (formats/pemn-v3.md). A version 3 file with q8 rows: outlier counts and
    shapes changed with the tensors as they were or re-made to match, dense.dtype other than int8, the
    label 2, a q8 tensor missing, retyped or resized, a NaN or infinite lo or step, outlier positions
    swapped, repeated or at n, random codes or outlier values, rows of the wrong width, the rows
    stored in f16/f32 instead (q8 tensors left over or not). Without q8 rows: floating rows quantized
    (under int8 or not), dtype and label swaps, stray q8 tensors. A version 1 or 2 file: rows quantized
    and dtype int8, laid out as version 3 or not, or just labelled 3."""
    if c.layout >= 3:
        edits = Q8_EDITS if _q8_indices(c) else V3_EDITS
    else:
        edits = OLDER_EDITS
    edit = rng.choice(edits)
    try:
        c.expect = edit(rng, c)
    except ValueError:
        if edit not in (_older_quantize, _v3_quantize):
            raise
        edit = _older_int8 if c.layout < 3 else _v3_dtype  # a file without floating leftovers
        c.expect = edit(rng, c)
    return edit.__name__.lstrip("_")


# ---- semantic edits: the file stays (or becomes again) valid; the fingerprint is recomputed


def m_sem_seed(rng, c: Candidate):
    seed = rng.choice([0, 1, 2**32 - 1, 2**32, 2**63 - 1, rng.getrandbits(63), rng.getrandbits(20)])
    if isinstance(c.header.get("config"), dict):
        c.header["config"]["seed"] = seed
        if isinstance(c.header.get("generator"), dict):  # version 2 leaves it out: derived from the config
            c.header["generator"]["seed"] = seed
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
    for each in layers:
        streams.append(masks[start : start + layer_bytes(each)])
        start += layer_bytes(each)
    for key in ("rice_k", "invert"):
        layer.pop(key, None)
    if rng.random() < 0.4:
        streams[i] = np.packbits(flat).tobytes()
        layer.update(codec="raw", ones=int(flat.sum()), bytes=len(streams[i]))
        if c.layout >= 2 and rng.random() < 0.7:
            del layer["bytes"]  # a version 2 writer leaves it out (derived); present and right is valid too
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
    (m_v2_header_bytes, 3),
    (m_v2_header_tensor, 6),
    (m_v2_derived, 5),
    (m_version_swap, 2),
    (m_v3_q8, 10),
]
# on version 3 seeds the int8 leftovers' rules get a quarter of the structured edits
STRUCTURED_V3 = [(f, 30 if f is m_v3_q8 else w) for f, w in STRUCTURED]
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
    version: int = 1  # the seed's layout
    expect: tuple | None = None  # outcomes the spec allows, for a case with one known fault (else None)


def make_case(seeds: list[Seed], fuzz_seed: int, index: int, load_fraction: float = 0.05) -> Case:
    """Case ``index`` of run ``fuzz_seed``: deterministic, independent of every other case."""
    rng = random.Random(f"pemn-fuzz/{fuzz_seed}/{index}")
    version = rng.choice(sorted({s.version for s in seeds}))  # each version an equal share of the cases
    seed = rng.choice([s for s in seeds if s.version == version])
    roll = rng.random()
    labels: list[str] = []
    expect = None
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
        table = SEMANTIC if family == "semantic" else STRUCTURED_V3 if seed.version >= 3 else STRUCTURED
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
        one_fault = family == "structured" and len(labels) == 1 and not labels[0].endswith(":skipped")
        expect = c.expect if one_fault and c.sign_header and c.sign_data else None
        if rng.random() < 0.06:
            mutator = _pick(rng, BYTES)
            blob, label = mutator(rng, blob)
            labels.append(f"{mutator.__name__}:{label}")
            expect = None
    load = rng.random() < load_fraction
    if any(label.startswith(("m_arch_field", "m_dense_field")) for label in labels):  # what only a loader follows
        load = load or rng.random() < min(1.0, 10 * load_fraction)
    masked = load and rng.random() < 0.2
    return Case(index, seed.name, blob, labels, family, load, masked, seed.version, expect)


def _refingerprint(c: Candidate, blob: bytes) -> bytes:
    """Recompute the weight fingerprint with the reference reader (if it can decode the file at all)."""
    ref = reference_reader()
    try:
        out = ref.read(blob, verify=False, max_weights=DEFAULT_MAX_WEIGHTS)
        weights = [out["weights"][layer["name"]] for layer in out["header"]["layers"]]
    except Exception:  # noqa: BLE001 - refused (or a reference-reader bug, which run_case reports): leave it
        if c.layout < 2 or reference_reads_v2():
            return blob
        try:  # a reference reader without version 2 yet: the package decodes (run_case compares nothing then)
            pf = read_pemn(blob, max_weights=DEFAULT_MAX_WEIGHTS)
            decoded = decode_weights(pf)
            weights = [decoded[layer.name] for layer in pf.layers]
        except Exception:  # noqa: BLE001 - refused, or a package bug that run_case reports
            return blob
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, dtype="<f4").tobytes())
    return c.encode(fingerprint=h.hexdigest())


_REFERENCE_V2: dict = {}


def reference_reads_v2() -> bool:
    """Whether formats/reference_reader.py reads version 2 (a valid version 2 file decodes). Until it
    does, ``run_case`` leaves files labelled version 2 out of the reader cross-check (``reference_skipped``)."""
    if "ok" not in _REFERENCE_V2:
        blob = to_version((VECTORS / "valid" / "seq_dense_raw_d50.pemn").read_bytes(), 2)
        try:
            reference_reader().read(blob)
            _REFERENCE_V2["ok"] = True
        except Exception:  # noqa: BLE001 - any failure: not (yet) a version 2 reader
            _REFERENCE_V2["ok"] = False
    return _REFERENCE_V2["ok"]


# ---------------------------------------------------------------------------------------------- running
class _HardTimeout(BaseException):
    """Raised by SIGALRM inside a reader that hangs; a BaseException so no `except Exception` eats it."""


def _alarm(signum, frame):
    raise _HardTimeout()


def _container_metadata(blob: bytes) -> tuple[dict, dict]:
    """(container entries, ``__metadata__``) of a file, ({}, {}) when they cannot be parsed."""
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        entries = json.loads(blob[8 : 8 + n])
        meta = entries.get("__metadata__", {})
        return (entries, meta) if isinstance(meta, dict) else (entries, {})
    except Exception:  # noqa: BLE001 - a broken container has no metadata
        return {}, {}


def declared_version(blob: bytes) -> int | None:
    """The ``pemn.version`` label as a reader reads it (1 to 6 ASCII digits), else None."""
    label = _container_metadata(blob)[1].get(KEY_VERSION)
    return int(label) if isinstance(label, str) and label.isascii() and label.isdigit() and len(label) <= 6 else None


def declared_header_bytes(blob: bytes) -> int:
    """The inflated header size a version 2 file declares (what a reader may inflate), 0 if none."""
    value = _container_metadata(blob)[1].get(KEY_HEADER_BYTES)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return min(int(value), MAX_HEADER_BYTES)
    return 0


def declared_weights(blob: bytes) -> int:
    """Masked weights the file's PEMN header declares (0 when it cannot be parsed), for memory bounds."""
    try:
        entries, meta = _container_metadata(blob)
        if HEADER_TENSOR in entries and (declared_version(blob) or 0) >= 2:
            (n,) = struct.unpack("<Q", blob[:8])
            stream = blob[8 + n :][slice(*entries[HEADER_TENSOR]["data_offsets"])]
            header = json.loads(inflate_bounded(stream, declared_header_bytes(blob) or 1 << 20))
        else:
            header = json.loads(meta[KEY_HEADER])
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
    (masks, bank tables, weights, fingerprint), plus a multiple of the header size a version 2 file
    declares (within MAX_HEADER_BYTES: the inflated text, its str and JSON), plus a fixed allowance."""
    weights = min(declared_weights(blob), max_weights)
    return 512 * len(blob) + 64 * weights + 8 * declared_header_bytes(blob) + (4 << 20)


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
    stage[0] = "dense"  # the leftovers a loader copies (version 3: q8 rows decoded)
    dense = pf.dense_arrays()
    stage[0] = "accepted"
    return pf, [(layer.name, weights[layer.name]) for layer in pf.layers], dense


def content_digest(pf, weights, dense: dict | None = None) -> str:
    """What a file decodes to: PEMN header, weight bits, dense leftovers (as stored; q8 rows decoded)."""
    h = hashlib.sha256(json.dumps(pf.header, sort_keys=True).encode())
    for name, w in weights:
        h.update(name.encode() + w.tobytes())
    for key, array in (pf.dense_arrays() if dense is None else dense).items():
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
    versions: Counter = field(default_factory=Counter)  # cases per seed layout (format version 1, 2 or 3)
    version_accepted: Counter = field(default_factory=Counter)
    reference_skipped: int = 0  # labelled version 2 while the reference reader reads version 1 only
    expectations_checked: int = 0  # one-fault cases whose mutator knows the outcomes the spec allows
    expectation_mismatches: Counter = field(default_factory=Counter)  # "mutation: allowed -> got"
    expectations_by_mutator: Counter = field(default_factory=Counter)  # checked one-fault cases per mutator
    expectations_by_version: Counter = field(default_factory=Counter)  # ... per seed layout
    dense_compared: int = 0  # both readers accepted: their decoded leftovers compared bit for bit
    q8_compared: int = 0  # ... of which the file had q8 rows (version 3)
    dense_disagreements: int = 0  # leftovers of other keys, dtypes, shapes or bits

    def to_dict(self) -> dict:
        out = {k: (dict(v.most_common()) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
        out["cases_per_second"] = self.cases / self.seconds if self.seconds else None
        out["unexpected_total"] = sum(self.unexpected.values())
        return out


@dataclass
class _Run:
    """What the readers did with one case (``_run_readers``)."""

    stage: str
    decoded: tuple | None
    exc: BaseException | None
    seconds: float
    rss_jump: int
    peak: int | None
    ref_out: dict | None
    ref_exc: BaseException | None
    ref_seconds: float
    load_exc: BaseException | None = None
    load_outcome: str | None = None

    @property
    def outcome(self) -> str:
        return _outcome(self.exc, (FormatError,))


def _run_readers(case: Case, seed: Seed, ref, max_weights: int, measure_memory: bool) -> _Run:
    """The package (traced when ``measure_memory``), the reference reader and maybe ``pemn.load`` on one case,
    each abandoned after HARD_TIMEOUT seconds."""
    stage = ["read"]
    old_handler = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HARD_TIMEOUT)
    try:
        if measure_memory:
            tracemalloc.start()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        decoded, exc, seconds = _timed(_package, case.blob, max_weights, stage)
        rss_jump = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
        peak = None
        if measure_memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        ref_out, ref_exc, ref_seconds = _timed(lambda b: ref.read(b, max_weights=max_weights), case.blob)
        run = _Run(stage[0], decoded, exc, seconds, rss_jump, peak, ref_out, ref_exc, ref_seconds)
        if case.load:
            use_skeleton = "skeleton" in seed.load or random.Random(case.index).random() < 0.3
            _, run.load_exc, _ = _timed(_load, case.blob, seed, use_skeleton, case.masked, max_weights)
            run.load_outcome = _outcome(run.load_exc, (PemnError,))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
    return run


def _problems(case: Case, seed: Seed, run: _Run, stats: FuzzStats, max_weights: int, slow: float) -> list[str]:
    """The unexpected outcomes of one case (``stats`` gets its memory sample and ``pemn.load`` outcome)."""
    outcome = run.outcome
    problems = [outcome] if outcome.startswith("unexpected") else []
    if case.family == "bytes" and outcome == "accepted" and content_digest(*run.decoded) != seed.digest:
        problems.append("unexpected:silent-change")  # unsigned byte damage read as a different model
    if run.seconds > slow:
        problems.append("unexpected:slow")
    if run.rss_jump > RSS_JUMP:
        problems.append("unexpected:rss")
    if run.peak is not None:
        bound = memory_bound(case.blob, max_weights)
        stats.memory_samples += 1
        stats.memory_peak_ratio = max(stats.memory_peak_ratio, run.peak / bound)
        if run.peak > bound:
            problems.append("unexpected:memory")
    if run.load_outcome is not None:
        stats.load[run.load_outcome] += 1
        if run.load_outcome.startswith("unexpected"):
            problems.append(f"unexpected:load:{type(run.load_exc).__name__}")
        if run.load_outcome == "accepted" and outcome != "accepted":
            stats.load_after_refusal += 1
            problems.append("unexpected:load-accepted-refused-file")
    return problems


def _stage(run: _Run) -> str:
    """How far the package got; for a refusal inside ``read_pemn``, which part refused."""
    if run.stage != "read" or run.exc is None:
        return run.stage
    message = str(run.exc)
    if "data checksum" in message:
        return "read: data checksum"
    if "header checksum" in message or "header_sha256" in message:
        return "read: header hash"
    return "read: container" if type(run.exc).__name__ == "ContainerError" else "read: header"


def _count(case: Case, run: _Run, ref_outcome: str, stats: FuzzStats, slow: float) -> None:
    """The case's outcomes in the counters of ``stats``."""
    outcome = run.outcome
    stats.cases += 1
    stats.package[outcome] += 1
    stats.reference[ref_outcome] += 1
    stats.stage[_stage(run)] += 1
    stats.family[case.family] += 1
    stats.family_accepted[case.family] += outcome == "accepted"
    stats.versions[case.version] += 1
    stats.version_accepted[case.version] += outcome == "accepted"
    for label in case.labels:
        stats.mutators[label.split(":")[0]] += 1
    stats.max_case_seconds = max(stats.max_case_seconds, run.seconds)
    if ref_outcome.startswith("unexpected") or run.ref_seconds > slow:
        stats.reference_unexpected[ref_outcome if ref_outcome.startswith("unexpected") else "slow"] += 1


def _expectation(case: Case, outcome: str, stats: FuzzStats) -> str | None:
    """A one-fault case against the outcome the spec gives it: the mismatch, or None."""
    if case.expect is None or outcome.startswith("unexpected"):
        return None
    stats.expectations_checked += 1
    stats.expectations_by_mutator[case.labels[0].split(":")[0]] += 1
    stats.expectations_by_version[case.version] += 1
    got = "accepted" if outcome == "accepted" else outcome.split(":")[1]
    if got in case.expect:
        return None
    mismatch = f"{case.labels[0]}: {'/'.join(case.expect)} -> {got}"
    stats.expectation_mismatches[mismatch] += 1
    return mismatch


def _dense_differs(dense: dict, ref_dense: dict) -> bool:
    """Whether two readers' leftovers differ: keys (in order), dtype, shape or bits (NaN payloads included)."""
    if list(dense) != list(ref_dense):
        return True
    for key, a in dense.items():
        b = np.asarray(ref_dense[key])
        a = np.asarray(a)
        if (a.dtype.kind, a.dtype.itemsize, a.shape) != (b.dtype.kind, b.dtype.itemsize, b.shape):
            return True
        little = a.dtype.newbyteorder("<")
        if np.ascontiguousarray(a, dtype=little).tobytes() != np.ascontiguousarray(b, dtype=little).tobytes():
            return True
    return False


def _compare(case: Case, run: _Run, ref_outcome: str, stats: FuzzStats) -> str | None:
    """The two readers on one case: the disagreement ("accept/refuse", "bits", "dense") or None."""
    outcome = run.outcome
    if outcome.startswith("unexpected") or ref_outcome.startswith("unexpected"):
        return None
    pkg_ok, ref_ok = outcome == "accepted", ref_outcome == "accepted"
    if pkg_ok != ref_ok:
        stats.accept_refuse_disagreements += 1
        return "accept/refuse"
    if pkg_ok:
        weights, ref_weights = run.decoded[1], run.ref_out["weights"]
        if [n for n, _ in weights] != list(ref_weights) or any(
            w.tobytes() != ref_weights[n].tobytes() for n, w in weights
        ):
            stats.bit_disagreements += 1
            return "bits"
        stats.dense_compared += 1
        table = run.ref_out["header"]["dense"]["tensors"]
        stats.q8_compared += any(len(row) == 4 and row[2] == "q8" for row in table)
        if _dense_differs(run.decoded[2], run.ref_out["dense"]):
            stats.dense_disagreements += 1
            return "dense"
    elif outcome.split(":")[1] != ref_outcome.split(":")[1]:  # informational: counted as agreeing
        stats.class_disagreements[f"{outcome.split(':')[1]} / {ref_outcome.split(':')[1]}"] += 1
        if len(stats.class_examples) < 20:
            stats.class_examples.append({"case": case.index, "seed": case.seed_name, "mutations": case.labels,
                                         "package": f"{outcome}: {str(run.exc)[:200]}",
                                         "reference": f"{ref_outcome}: {str(run.ref_exc)[:200]}"})
    stats.agree += 1
    return None


def _record(case: Case, run: _Run, ref_outcome: str, expectation: str | None) -> dict:
    record = {
        "peak": run.peak,
        "case": case.index,
        "seed": case.seed_name,
        "family": case.family,
        "mutations": case.labels,
        "package": run.outcome,
        "reference": ref_outcome,
        "load": run.load_outcome,
        "stage": run.stage,
        "seconds": round(run.seconds, 4),
        "bytes": len(case.blob),
    }
    if run.exc is not None:
        record["package_message"] = str(run.exc)[:300]
    if run.ref_exc is not None:
        record["reference_message"] = str(run.ref_exc)[:300]
    if expectation is not None:
        record["expectation"] = expectation
    return record


def _report(case: Case, run: _Run, record: dict, stats: FuzzStats, crash_dir: Path | None, saved: Counter | None):
    """A case with a problem, a disagreement or an expectation mismatch: counted, its input saved, an example kept."""
    problems, disagreement = record["problems"], record["disagreement"]
    for p in problems:
        stats.unexpected[p] += 1
    kind = problems[0] if problems else f"disagreement:{disagreement}" if disagreement else "expectation"
    bad = run.load_exc if (run.load_exc is not None and not isinstance(run.load_exc, PemnError)) else run.exc
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
    skip_reference = declared_version(case.blob) == 2 and not reference_reads_v2()
    run = _run_readers(case, seed, ref, max_weights, measure_memory)
    ref_outcome = _outcome(run.ref_exc, (ref.FormatError,))
    problems = _problems(case, seed, run, stats, max_weights, slow)
    _count(case, run, ref_outcome, stats, slow)
    expectation = _expectation(case, run.outcome, stats)
    if skip_reference:
        stats.reference_skipped += 1
        disagreement = None
    else:
        disagreement = _compare(case, run, ref_outcome, stats)
    record = _record(case, run, ref_outcome, expectation)
    if problems or disagreement or expectation:
        record.update(problems=problems, disagreement=disagreement)
        _report(case, run, record, stats, crash_dir, saved)
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
        for index in range(start, start + cases):
            case = make_case(seeds, seed, index, load_fraction)
            if inflight is not None:
                inflight.write_bytes(case.blob)
            run_case(case, by_name, stats, max_weights=max_weights,
                     measure_memory=memory_every > 0 and index % memory_every == 0, slow=slow, crash_dir=crash_dir,
                     saved=saved)
            if progress and (index - start + 1) % 5000 == 0:
                rate = (index - start + 1) / (time.perf_counter() - began)
                print(f"  {index - start + 1:,} cases, {rate:,.0f}/s, unexpected {sum(stats.unexpected.values())}, "
                      f"disagreements {stats.accept_refuse_disagreements}", file=sys.stderr, flush=True)
    stats.seconds = time.perf_counter() - began
    if inflight is not None:
        inflight.unlink(missing_ok=True)
    return stats


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
        f"leftovers {stats.dense_disagreements} (of {stats.dense_compared:,} compared, {stats.q8_compared:,} with q8), "
        f"error class {sum(stats.class_disagreements.values())}",
        f"memory: {stats.memory_samples} traced cases, worst peak {100 * stats.memory_peak_ratio:.1f}% of the bound; "
        f"slowest case {stats.max_case_seconds * 1e3:.0f} ms",
        "format versions (seed layout: cases, accepted): "
        + ", ".join(f"v{v}: {n:,}, {stats.version_accepted[v]:,}" for v, n in sorted(stats.versions.items()))
        + f"; cross-check skipped (reference reader without version 2): {stats.reference_skipped:,}",
        f"one-fault expectations: {stats.expectations_checked:,} checked, "
        f"{sum(stats.expectation_mismatches.values())} mismatches {dict(stats.expectation_mismatches)}",
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
    parser.add_argument("--slow", type=float, default=SLOW_SECONDS,
                        help="a case slower than this many seconds (one reader call) is an unexpected outcome")
    parser.add_argument("--write-seeds", type=Path, default=None, metavar="DIR",
                        help="also write the seed files (the valid vectors, each as version 2 under v2/, "
                             "and the version 3 vectors under v3/)")
    args = parser.parse_args(argv)
    if args.write_seeds is not None:
        write_seeds(args.write_seeds)
    if args.replay is not None:
        import torch

        torch.set_num_threads(1)
        seeds = load_seeds()
        case = make_case(seeds, args.seed, args.replay, args.load_fraction)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            record = run_case(case, {s.name: s for s in seeds}, FuzzStats(), max_weights=args.max_weights,
                              measure_memory=True, slow=args.slow)
        print(json.dumps(record, indent=1, default=str))
        return 1 if record.get("problems") or record.get("disagreement") or record.get("expectation") else 0
    stats = run_fuzz(
        args.cases,
        args.seed,
        max_weights=args.max_weights,
        load_fraction=args.load_fraction,
        memory_every=args.memory_every,
        crash_dir=args.crash_dir,
        progress=True,
        slow=args.slow,
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
    return 1 if stats.unexpected or stats.expectation_mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
