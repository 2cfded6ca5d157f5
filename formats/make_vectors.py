"""(Re)generate the `.pemn` golden vectors: formats/vectors/{valid,invalid}/*.pemn + expected.json
(format version 1), formats/vectors/v2/{valid,invalid}/ (format version 2, formats/pemn-v2.md) and
formats/vectors/v3/{valid,invalid}/ (format version 3, formats/pemn-v3.md: int8 leftovers).

    PYTHONPATH=. python formats/make_vectors.py            # writes formats/vectors/
    PYTHONPATH=. python formats/make_vectors.py --out DIR  # writes DIR/valid, DIR/invalid, DIR/v2/..., DIR/v3/...

Valid vectors are written by the package's own writer (``pemn_compress.export.to_bytes``)
from tiny models whose every number is fixed: dense leftovers (biases, BatchNorm) and mask scores are
drawn from the format's own Philox generator (``pemn_compress.rng``), not from torch's RNG, so the same
bytes come out with any torch version, on any machine. No training is involved: each mask is the
top-``density`` fraction of those seeded scores. ``valid/expected.json`` pins, per file, the SHA-256
of every layer's materialized float32 weight bytes, of every dense tensor as stored, the fingerprint,
the whole file and its identity (formats/pemn-v2.md section 3.1: the same for any DEFLATE of the header).

The version 2 set reuses the same models and options, written with ``format_version=2``, plus edits
that pin what version 2 changes (a stored scale, every derived key present, other DEFLATE streams).

The version 3 set has its own models and options, all written with ``dense_dtype="int8"`` (group ``q8``
where it takes fewer bytes than float16): a folded ConvMixer whose few BatchNorm channels with a tiny
running variance give float16 outliers, a model with a ``q8`` entry next to ``f16`` (too small for q8),
``f32`` (outside float16's range) and ``i64`` entries, unfolded BatchNorm statistics in q8, and an int8
file with no q8 row at all; plus edits that pin what version 3 says "accept" (every value an outlier,
step 0, non-finite outliers, a version 3 file without q8 rows). Its ``expected.json`` hashes a ``q8``
leftover as the float32 values it decodes to (formats/pemn-v3.md section 4), every other as stored.

Invalid vectors are edits of valid ones. Each edit is made deliberately so that the file reaches the
check under test: after changing a tensor the header's ``checksums`` are recomputed, after changing
the header ``pemn.header_sha256`` is recomputed (version 2: the header is deflated again into the
``header`` tensor, ``pemn.header_bytes`` set, and ``checksums.data`` covers every tensor but
``header``), unless the point of the vector is that one of them is wrong. ``invalid/expected.json``
names, per file, the error class (from pemn_compress.errors; the reference reader defines classes of
the same names), a substring of the message, and ``scope``:
``readers`` (both readers refuse the file) or ``load`` (only ``pemn.load`` refuses it; for a reader
that builds no architecture it is valid data). Every vector is under ``MAX_VECTOR_BYTES`` but one
(``LARGE_VECTORS``: a q8 row of 65,537 values needs at least that many bytes to hold no other fault).

The script is deterministic: running it twice gives byte-identical trees (tests/fileformat/
test_vectors.py checks it against the committed files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import struct
import sys
import zlib
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `python formats/make_vectors.py` from a checkout, no install
    sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from pemn_compress import rng  # noqa: E402
from pemn_compress.config import MaskConfig  # noqa: E402
from pemn_compress.export import to_bytes  # noqa: E402
from pemn_compress.fileformat.codecs import rice_encode  # noqa: E402
from pemn_compress.fileformat.constants import (  # noqa: E402
    DENSE_GROUPS,
    DENSE_PREFIX,
    FORMAT_VERSIONS,
    HEADER_TENSOR,
    KEY_HEADER,
    KEY_HEADER_BYTES,
    KEY_HEADER_SHA256,
    KEY_VERSION,
    MASKS_TENSOR,
    MAX_HEADER_BYTES,
    VALUES_PREFIX,
)
from pemn_compress.fileformat.container import data_buffer, decode_container, encode_container  # noqa: E402
from pemn_compress.fileformat.deflate import deflate  # noqa: E402
from pemn_compress.fileformat.header import canonical_json  # noqa: E402
from pemn_compress.fileformat.payload import Payload  # noqa: E402
from pemn_compress.fileformat.reader import (  # noqa: E402
    decode,
    decode_masks,
    decode_weights,
    file_identity,
    read_pemn,
    verify_fingerprint,
    weights_fingerprint,
)
from pemn_compress.fileformat.writer import encode  # noqa: E402
from pemn_compress.models import create_model  # noqa: E402
from pemn_compress.strategies import kaiming_scale  # noqa: E402
from pemn_compress.surgery import mask_, masked_layers  # noqa: E402

MAX_VECTOR_BYTES = 50_000  # every vector stays small ...
MAX_TOTAL_BYTES = 1_000_000  # ... and all of them together too
# ... but this one: a q8 row of 65,537 values (one over the limit, formats/pemn-v3.md section 2) and its codes
LARGE_VECTORS = {"v3/invalid/q8_row_65537_values.pemn": 70_000}
NEWER_VERSION = 4  # what the "newer version" vectors are labelled (formats/pemn-v3.md section 7)
if NEWER_VERSION <= max(FORMAT_VERSIONS):
    raise AssertionError(f"version {NEWER_VERSION} is no longer newer than what the package reads: relabel them")

# Philox seeds of the numbers that are not part of the format (dense leftovers and scores): any fixed
# value works; what matters is that they do not come from torch's RNG.
DENSE_SEED = 0x5EED_DE45
SCORE_SEED = 0x5C0_4E5


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------- models
def tiny_seq() -> nn.Module:
    """Two identical 3x3 convs (a shared onelayer bank), two BatchNorms, a Linear head with bias.

    Input (B, 4, 4, 4). Masked shapes: [4, 4, 3, 3], [4, 4, 3, 3], [3, 64].
    """
    return nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, bias=False),  # (B, 4, 4, 4)
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),  # (B, 4, 4, 4)
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),  # (B, 64)
        nn.Linear(64, 3),  # (B, 3)
    )


def tiny_conv1d() -> nn.Module:
    """Conv1d with bias and a Linear head: layer sizes 18 and 36, not multiples of 8 (raw padding bits).

    Input (B, 2, 8). Masked shapes: [3, 2, 3], [2, 18]. An int32 buffer ``step`` exercises the i64 group.
    """
    # (B, 3, 6) -> (B, 18) -> (B, 2)
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2))
    model.register_buffer("step", torch.zeros(3, dtype=torch.int32))
    return model


def convmixer_skeleton() -> nn.Module:
    """The zoo's ``test_convmixer`` (registry architecture reference, so pemn.load can rebuild it)."""
    return create_model("test_convmixer")


def root_linear() -> nn.Module:
    """The whole model is one Linear (12 -> 5, with bias): its layer is the root module, named ""."""
    return nn.Linear(12, 5)


def odd_fan_in() -> nn.Module:
    """A Conv1d of fan_in 25 and a Linear of fan_in 15: their Kaiming scales computed in float32 arithmetic
    differ from the binary64 ones the spec prescribes (v1 section 9.3). Input (B, 5, 9)."""
    # (B, 3, 5) -> (B, 15) -> (B, 2)
    return nn.Sequential(nn.Conv1d(5, 3, 5), nn.ReLU(), nn.Flatten(), nn.Linear(15, 2))


def int8_mixed() -> nn.Module:
    """Leftovers of every group an int8 file holds: a Conv1d bias of 8 values (q8), a 1x1 Conv1d bias of 3
    values (too few for q8: f16), a Linear bias of 6 values (f32 once one is set outside float16's range),
    an int32 buffer ``step`` (i64). Input (B, 2, 8). Masked shapes: [8, 2, 3], [3, 8, 1], [6, 18]."""
    # (B, 8, 6) -> (B, 3, 6) -> (B, 18) -> (B, 6)
    model = nn.Sequential(nn.Conv1d(2, 8, 3), nn.ReLU(), nn.Conv1d(8, 3, 1), nn.Flatten(), nn.Linear(18, 6))
    model.register_buffer("step", torch.zeros(3, dtype=torch.int32))
    return model


SKELETONS = {
    "tiny_seq": tiny_seq, "tiny_conv1d": tiny_conv1d, "test_convmixer": convmixer_skeleton, "root_linear": root_linear,
    "odd_fan_in": odd_fan_in, "int8_mixed": int8_mixed,
}


def _philox_uniform(seed: int, stream: int, n: int) -> np.ndarray:
    return rng.unit_values(seed, stream, n, "uniform")  # float32 in (-sqrt 3, sqrt 3)


def _fill_dense(model: nn.Module) -> None:
    """Every floating parameter and buffer from Philox; BatchNorm statistics made non-trivial."""
    with torch.no_grad():
        for i, (key, tensor) in enumerate(sorted(model.state_dict().items())):
            if not tensor.is_floating_point():  # num_batches_tracked
                tensor.fill_(7)
                continue
            u = _philox_uniform(DENSE_SEED, i, tensor.numel())
            if key.endswith("running_var"):
                u = np.abs(u) + np.float32(0.5)
            elif key.endswith("weight") and tensor.dim() == 1:  # norm scale
                u = np.float32(1.0) + np.float32(0.25) * u
            else:
                u = np.float32(0.1) * u
            tensor.copy_(torch.from_numpy(u.astype(np.float32)).view(tensor.shape))


def _fill_scores(model: nn.Module, vector_index: int) -> None:
    with torch.no_grad():
        for j, (_, layer) in enumerate(masked_layers(model)):
            s = _philox_uniform(SCORE_SEED + vector_index, j, layer.scores.numel())
            layer.scores.copy_(torch.from_numpy(s).view(layer.scores.shape))


def _learn_values(model: nn.Module) -> None:
    """Stand-in for trained values: the stored vector differs from what the generator gives."""
    with torch.no_grad():
        for bank in model.pemn_values:
            unit = bank.unit.detach().numpy()
            bank.unit.copy_(torch.from_numpy((unit * np.float32(1.25) + np.float32(0.125)).astype(np.float32)))


# --------------------------------------------------------------------------------------- valid
# name -> (skeleton, MaskConfig kwargs, to_bytes kwargs, codecs that must appear, description)
VALID = {
    "seq_dense_raw_d50": ("tiny_seq", dict(strategy="dense", density=0.5, seed=1), dict(codec="raw"), {"raw"},
                          "dense strategy, raw codec at density 0.5, normal values"),
    "seq_onelayer_rice_d10": ("tiny_seq", dict(strategy="onelayer", density=0.1, seed=2, distribution="uniform"),
                              {}, {"rice"}, "onelayer (two convs share a bank), rice at density 0.1, uniform values"),
    "seq_onelayer_rice_d90_fp16": ("tiny_seq", dict(strategy="onelayer", density=0.9, seed=3),
                                   dict(dense_dtype="float16"), {"rice"},
                                   "rice with invert at density 0.9, fp16 leftovers"),
    "seq_mp_paper_signed": ("tiny_seq", dict(strategy="mp", density=0.5, seed=4, distribution="signed_constant",
                                             rescale=False), {}, {"raw"},
                            "mp without rescale (every layer has the largest layer's scale), signed constant"),
    "seq_mp_learned": ("tiny_seq", dict(strategy="mp", density=0.5, seed=5, learn_values=True), {}, {"raw"},
                       "mp with learned (stored) values"),
    "seq_rp_copy": ("tiny_seq", dict(strategy="rp", ratio=0.05, rp_mode="copy", density=0.5, seed=6), {}, {"raw"},
                    "rp copy, 10 values tiled to 192"),
    "seq_rp_rand_maxseed_folded": ("tiny_seq", dict(strategy="rp", ratio=0.05, rp_mode="rand", density=0.1,
                                                    seed=2**63 - 1, distribution="uniform"),
                                   dict(fold_batchnorm=True), {"rice"},
                                   "rp rand (permutation stream 2**32), largest seed, BatchNorm folded"),
    "seq_rp_learned_signed": ("tiny_seq", dict(strategy="rp", ratio=0.02, rp_mode="rand", density=0.5, seed=8,
                                               distribution="signed_constant", learn_values=True), {}, {"raw"},
                              "rp rand with learned values, signed constant"),
    "seq_dense_folded_fp16": ("tiny_seq", dict(strategy="dense", density=0.5, seed=9, distribution="uniform"),
                              dict(fold_batchnorm=True, dense_dtype="float16",
                                   provenance={"dataset": "none (golden vector)", "accuracy": 0.5,
                                               "note": "na\u00efve \u2713",
                                               "recipe": {"epochs": 0, "lr": [0.1, 0.01]}}), {"raw"},
                              "BatchNorm folded and fp16 leftovers, non-ASCII provenance"),
    "seq_rp_ratio1": ("tiny_seq", dict(strategy="rp", ratio=1.0, rp_mode="copy", density=0.9, seed=10), {}, {"rice"},
                      "rp with ratio 1: the vector size is clamped to N_max"),
    "seq_onelayer_density1": ("tiny_seq", dict(strategy="onelayer", density=1.0, seed=11), {}, {"raw"},
                              "density 1: every weight kept"),
    "conv1d_dense_raw_d30": ("tiny_conv1d", dict(strategy="dense", density=0.3, seed=12), dict(codec="raw"), {"raw"},
                             "Conv1d with bias; layer sizes not multiples of 8 (raw padding)"),
    "conv1d_fp16_overflow": ("tiny_conv1d", dict(strategy="dense", density=0.5, seed=18), dict(dense_dtype="float16"),
                             {"raw"},
                             "fp16 leftovers, one of them beyond the fp16 range (stays in dense.f32); "
                             "an int buffer (dense.i64)"),
    "cm_onelayer_d50": ("test_convmixer", dict(strategy="onelayer", density=0.5, seed=13), {}, {"raw"},
                        "test_convmixer (registry reference), onelayer, depthwise convs"),
    "cm_dense_rice_d10": ("test_convmixer", dict(strategy="dense", density=0.1, seed=14, distribution="uniform"),
                          {}, {"rice"}, "test_convmixer, dense strategy, rice at density 0.1"),
    "cm_rp_single_value": ("test_convmixer", dict(strategy="rp", ratio=1e-3, rp_mode="rand", density=0.9, seed=15,
                                                  distribution="signed_constant"), {}, {"rice"},
                           "test_convmixer, rp ratio 1e-3: one single value"),
    "cm_mp_paper_folded_fp16": ("test_convmixer", dict(strategy="mp", density=0.5, seed=16, rescale=False),
                                dict(fold_batchnorm=True, dense_dtype="float16"), {"raw"},
                                "test_convmixer, mp without rescale, BatchNorm folded, fp16 leftovers"),
    "cm_rp_copy_learned": ("test_convmixer", dict(strategy="rp", ratio=0.01, rp_mode="copy", density=0.5, seed=17,
                                                  distribution="uniform", learn_values=True), {}, {"raw"},
                           "test_convmixer, rp copy with learned values"),
}


POST_FILL = {  # vector name -> a deterministic change made after _fill_dense
    "conv1d_fp16_overflow": lambda model: model[3].bias.data.copy_(torch.tensor([1.0e5, -3.0])),  # 1e5 > fp16 max
}


def build_valid(name: str, version: int = 1) -> bytes:
    """VALID vector ``name`` written in format ``version`` (the same model and options in both)."""
    skeleton, config_kwargs, save_kwargs, _, _ = VALID[name]
    model = SKELETONS[skeleton]()
    _fill_dense(model)
    # pinned, like the writer options: the product's defaults move with measurements, the vectors must not
    config = MaskConfig(**{"distribution": "normal", "rp_mode": "copy", **config_kwargs})
    if name in POST_FILL:
        POST_FILL[name](model)
    mask_(model, config)
    _fill_scores(model, list(VALID).index(name))
    if config.learn_values:
        _learn_values(model)
    # never the writer's defaults: the vectors must not change when a default does
    return to_bytes(model, format_version=version,
                    **{"dense_dtype": "float32", "fold_batchnorm": False, **save_kwargs})


# --------------------------------------------------------------------------------------- derived valid
# Valid files no writer option produces, made by editing a valid vector (or a wrapped model): each pins
# a reader rule that says "accept". name -> (skeleton for pemn.load, codecs, description, builder);
# a builder takes the VALID blobs by name and returns the file.
def _root_linear_file(blobs: dict[str, bytes]) -> bytes:
    """nn.Sequential(Linear) written by the package, then renamed to the bare Linear: layer "" and
    dense key "bias" (mask_ cannot mask a bare layer in place, a writer of another tool may)."""
    model = nn.Sequential(root_linear())
    _fill_dense(model)
    mask_(model, MaskConfig(strategy="dense", density=0.5, seed=19, distribution="normal", rp_mode="copy"))
    _fill_scores(model, len(VALID))
    e = Edit(to_bytes(model, format_version=1, dense_dtype="float32", fold_batchnorm=False, codec="raw"))
    e.header["layers"][0]["name"] = ""
    table = e.header["dense"]["tensors"]
    e.header["dense"]["tensors"] = [[key.removeprefix("0."), shape, group] for key, shape, group in table]
    return e.pack()


def _not_canonical_file(blobs: dict[str, bytes]) -> bytes:
    """pemn.header indented, keys in reverse order, non-ASCII unescaped: hashed as stored, still read."""
    e = Edit(blobs["seq_dense_raw_d50"])
    e.header["provenance"] = {"note": "na\u00efve \u2713"}
    reordered = dict(reversed(list(e.header.items())))
    return e.pack(header_text=json.dumps(reordered, indent=1, ensure_ascii=False))


def _nested(depth: int) -> list:
    """A JSON array of the given depth ([] has depth 1)."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _depth_64_file(blobs: dict[str, bytes]) -> bytes:
    """pemn.header of depth exactly 64: header object (1) + provenance object (1) + 62 arrays."""
    e = Edit(blobs["seq_dense_raw_d50"])
    e.header["provenance"] = {"deep": _nested(62)}
    return e.pack()


def _padding_file(blobs: dict[str, bytes]) -> bytes:
    """Safetensors header preceded by LF and followed by tab, LF, CR, space: JSON whitespace, accepted."""
    blob = blobs["seq_dense_raw_d50"]
    (n,) = struct.unpack("<Q", blob[:8])
    text = b"\n" + blob[8 : 8 + n].rstrip(b" ") + b"\t\n\r "
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


def _nonfinite_leftovers_file(blobs: dict[str, bytes]) -> bytes:
    """Dense leftovers holding NaN and -inf: allowed (they do not enter the fingerprint)."""
    e = Edit(blobs["seq_dense_raw_d50"])
    e.tensors["dense.f32"][:2] = [np.nan, -np.inf]
    return e.pack()


def _fp16_with_f32_entry_file(blobs: dict[str, bytes]) -> bytes:
    """A float16 file with an in-range leftover in dense.f32: readers do not look at the values."""
    e = Edit(blobs["seq_onelayer_rice_d90_fp16"])
    arrays = _dense_arrays(e)
    table = e.header["dense"]["tensors"]
    table[0][2] = "f32"
    _set_dense(e, arrays, table)
    return e.pack()


def _long_decimal_scale_file(blobs: dict[str, bytes]) -> bytes:
    """Layer 0's scale written with 24 more digits: a decimal that is not the float32 value, whose binary64
    value is (section 6.1: every rule about a number applies to its binary64 value)."""
    e = Edit(blobs["seq_dense_raw_d50"])
    scale = e.header["layers"][0]["scale"]
    longer = json.dumps(scale) + "0" * 23 + "1"
    if float(longer) != scale or Fraction(longer) == Fraction(scale):
        raise AssertionError("the longer decimal must differ from the scale and round to it")
    text = canonical_json(e.header).replace(f'"scale":{json.dumps(scale)}', f'"scale":{longer}', 1)
    return e.pack(header_text=text)


def _reordered_container_file(blobs: dict[str, bytes]) -> bytes:
    """The safetensors JSON in other orders than the writer's (section 5.7): tensors in reverse, each entry's
    keys reversed, ``__metadata__`` last with its keys reversed. Readers depend on no order."""
    entries, data = container_entries(blobs["seq_dense_raw_d50"])
    metadata = entries.pop("__metadata__")
    reordered = {name: dict(reversed(list(entry.items()))) for name, entry in reversed(list(entries.items()))}
    reordered["__metadata__"] = dict(reversed(list(metadata.items())))
    return raw_container(reordered, data)


DERIVED = {
    "linear_root_layer": ("root_linear", {"raw"}, "the whole model is one Linear: layer '' and dense key 'bias'",
                          _root_linear_file),
    "seq_dense_header_not_canonical": ("tiny_seq", {"raw"}, "pemn.header indented, keys reversed, non-ASCII "
                                       "unescaped: readers hash the stored text and accept it", _not_canonical_file),
    "seq_dense_header_depth_64": ("tiny_seq", {"raw"}, "pemn.header nested exactly 64 deep (the limit)",
                                  _depth_64_file),
    "seq_dense_container_padding": ("tiny_seq", {"raw"}, "safetensors header with JSON whitespace before and after "
                                    "(LF; tab, LF, CR, space)", _padding_file),
    "seq_dense_leftovers_nonfinite": ("tiny_seq", {"raw"}, "dense leftovers holding NaN and -inf (allowed)",
                                      _nonfinite_leftovers_file),
    "seq_fp16_with_f32_entry": ("tiny_seq", {"rice"}, "float16 file with an in-range leftover stored in dense.f32",
                                _fp16_with_f32_entry_file),
    "seq_dense_scale_long_decimal": ("tiny_seq", {"raw"}, "layer 0's scale written with 24 more digits: not the "
                                     "float32 decimal, but its binary64 value is the float32 value",
                                     _long_decimal_scale_file),
    "seq_dense_container_reordered": ("tiny_seq", {"raw"}, "safetensors JSON with tensors reversed, each entry's keys "
                                      "reversed, __metadata__ last with its keys reversed", _reordered_container_file),
}


# derived vectors whose bytes are not what the writer makes of their content (``encode(decode(blob))``
# differs): marked ``"canonical": false`` in valid/expected.json
NOT_CANONICAL = {"seq_dense_header_not_canonical", "seq_dense_container_padding", "seq_dense_scale_long_decimal",
                 "seq_dense_container_reordered"}


# --------------------------------------------------------------------------------------- derived valid, version 2
# Valid version 2 files no writer option produces (or one that only an edit gives: a scale the rule does
# not give), each pinning a rule of formats/pemn-v2.md that says "accept". Builders take the version 2
# and the version 1 blobs of VALID by name.
def _zlib_stream(text: bytes, level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY, parts: int = 1) -> bytes:
    """``text`` as one raw DEFLATE stream made with other zlib settings than the writer's; ``parts`` > 1
    feeds it in pieces with a full flush between them (more blocks, empty stored ones included)."""
    packer = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    step = -(-len(text) // parts)
    pieces = [packer.compress(text[i : i + step]) + packer.flush(zlib.Z_FULL_FLUSH) for i in range(0, len(text), step)]
    return b"".join(pieces) + packer.flush()


def _scale_not_derived_file(v2: dict[str, bytes], v1: dict[str, bytes]) -> bytes:
    """mp without rescale: every layer's derived scale is the largest layer's; layer 0 gets its own
    Kaiming scale instead, so the header stores it (used as stored; fingerprint recomputed)."""
    e = Edit(v2["seq_mp_paper_signed"])
    layer = e.header["layers"][0]
    if "scale" in layer:
        raise AssertionError("seq_mp_paper_signed: the version 2 writer wrote a derivable scale")
    layer["scale"] = kaiming_scale(layer["shape"])
    return _refingerprinted(e)


def _every_key_present_file(v2: dict[str, bytes], v1: dict[str, bytes]) -> bytes:
    """The version 1 header (generator, banks, every bank, bytes and scale present) in a version 2 file."""
    e = Edit(v2["seq_rp_copy"])
    e.header = Edit(v1["seq_rp_copy"]).header
    return e.pack()


def _stored_block_file(v2: dict[str, bytes], v1: dict[str, bytes]) -> bytes:
    """The header text deflated at level 0: stored (uncompressed) blocks, a valid DEFLATE stream."""
    return Edit(v2["seq_onelayer_rice_d10"]).pack(compress=lambda text: _zlib_stream(text, 0))


def _flushed_blocks_file(v2: dict[str, bytes], v1: dict[str, bytes]) -> bytes:
    """The header deflated at level 1 with fixed Huffman codes, in three parts with a full flush between
    them (several blocks, empty stored blocks among them), memory level 9."""
    return Edit(v2["cm_rp_copy_learned"]).pack(compress=lambda text: _zlib_stream(text, 1, zlib.Z_FIXED, parts=3))


def _padding_bits_file(v2: dict[str, bytes], v1: dict[str, bytes]) -> bytes:
    """The bits after the end of the final block in the stream's last byte set to 1 (ignored)."""
    e = Edit(v2["seq_dense_raw_d50"])

    def compress(text: bytes) -> bytes:
        stream = bytearray(deflate(text))
        for bit in range(7, -1, -1):  # from the top: padding bits are the high bits of the last byte
            trial = bytearray(stream)
            trial[-1] |= 1 << bit
            unpacker = zlib.decompressobj(-15)
            if unpacker.decompress(bytes(trial)) != text or not unpacker.eof or unpacker.unused_data:
                break
            stream = trial
        if stream[-1] == deflate(text)[-1]:
            raise AssertionError("the final block ends on a byte boundary: no padding bits to set")
        return bytes(stream)

    return e.pack(compress=compress)


def _metadata_header_ignored_file(v2: dict[str, bytes], v1: dict[str, bytes]) -> bytes:
    """A version 2 file whose metadata also holds a 'pemn.header' (not the header): readers ignore it."""
    e = Edit(v2["seq_dense_raw_d50"])
    e.metadata[KEY_HEADER] = '{"stale": "not the header of this file: version 2 readers ignore pemn.header"}'
    return e.pack()


def _odd_fan_in_file(v2: dict[str, bytes], v1: dict[str, bytes]) -> bytes:
    """A writer's file of ``odd_fan_in``: both scales left out, derived in binary64 (v1 section 9.3); in float32
    arithmetic both would come out one ulp off (checked here), so a reader that derives so fails the fingerprint."""
    model = odd_fan_in()
    _fill_dense(model)
    mask_(model, MaskConfig(strategy="onelayer", density=0.5, seed=20, distribution="normal", rp_mode="copy"))
    _fill_scores(model, len(VALID) + 1)
    blob = to_bytes(model, format_version=2, dense_dtype="float32", fold_batchnorm=False, codec="raw")
    for layer in Edit(blob).header["layers"]:
        fan = math.prod(layer["shape"][1:])
        if "scale" in layer or np.sqrt(np.float32(2) / np.float32(fan)) == np.float32(math.sqrt(2 / fan)):
            raise AssertionError(f"layer {layer['name']!r}: fan_in {fan} does not tell the two computations apart")
    return blob


DERIVED_V2 = {
    "seq_mp_paper_scale_not_derived": ("tiny_seq", {"raw"}, "mp without rescale, layer 0's scale edited to its own "
                                       "Kaiming scale: written in the header, used as stored",
                                       _scale_not_derived_file),
    "seq_rp_copy_every_key_present": ("tiny_seq", {"raw"}, "every derived key present (generator, banks, bank, "
                                      "raw bytes, scale): accepted", _every_key_present_file),
    "seq_onelayer_header_stored_block": ("tiny_seq", {"rice"}, "header stream of stored blocks (zlib level 0)",
                                         _stored_block_file),
    "cm_rp_copy_header_flushed_blocks": ("test_convmixer", {"raw"}, "header stream made by zlib level 1, fixed "
                                         "Huffman codes, three full flushes (several blocks)", _flushed_blocks_file),
    "seq_dense_header_padding_bits": ("tiny_seq", {"raw"}, "header stream whose bits after the final block "
                                      "(in its last byte) are ones: ignored", _padding_bits_file),
    "seq_dense_metadata_header_ignored": ("tiny_seq", {"raw"}, "metadata 'pemn.header' present with other text: "
                                          "ignored in version 2", _metadata_header_ignored_file),
    "conv1d_linear_odd_fan_in": ("odd_fan_in", {"raw"}, "fan_in 25 and 15: derived scales computed in binary64 "
                                 "(float32 arithmetic gives other bits)", _odd_fan_in_file),
}

# version 2 vectors whose bytes are not the writer's (``encode(decode(blob), version=2)`` differs)
NOT_CANONICAL_V2 = {
    "seq_rp_copy_every_key_present", "seq_onelayer_header_stored_block", "cm_rp_copy_header_flushed_blocks",
    "seq_dense_header_padding_bits", "seq_dense_metadata_header_ignored",
}


# --------------------------------------------------------------------------------------- valid, version 3
# Written by the package with int8 leftovers (formats/pemn-v3.md). name -> (skeleton, MaskConfig kwargs,
# to_bytes kwargs, codecs that must appear, description); V3_GROUPS: the dense groups each must use, V3_OUTLIERS:
# those with float16 outliers in some q8 row.
VALID_V3 = {
    "cm_mp_folded_int8_outliers": ("test_convmixer", dict(strategy="mp", density=0.5, seed=21), dict(
        fold_batchnorm=True, codec="raw"), {"raw"}, "test_convmixer, BatchNorm folded, int8 leftovers: three "
        "channels of tiny running variance give float16 outliers (two in stem.2.weight)"),
    "int8_mixed_groups": ("int8_mixed", dict(strategy="dense", density=0.5, seed=22, distribution="uniform"),
                          dict(codec="raw"), {"raw"}, "int8 leftovers in every group: q8 (with one outlier), f16 "
                          "(3 values: too few for q8), f32 (a value outside float16's range), i64 (an int buffer)"),
    "cm_rp_int8_unfolded": ("test_convmixer", dict(strategy="rp", ratio=0.01, rp_mode="rand", density=0.1, seed=23,
                                                   distribution="signed_constant"), {}, {"rice"},
                            "test_convmixer, rp rand, rice, BatchNorm not folded: its running statistics in q8, "
                            "no outlier"),
    "seq_onelayer_int8_no_q8": ("tiny_seq", dict(strategy="onelayer", density=0.5, seed=24), {}, {"raw"},
                                "dense.dtype int8 whose every leftover is too small for q8: no q8 row, no q8 tensor"),
}
V3_GROUPS = {
    "cm_mp_folded_int8_outliers": {"q8"}, "int8_mixed_groups": {"q8", "f16", "f32", "i64"},
    "cm_rp_int8_unfolded": {"q8"}, "seq_onelayer_int8_no_q8": {"f16"},
}
V3_OUTLIERS = {"cm_mp_folded_int8_outliers", "int8_mixed_groups"}
V3_SCORE_INDEX = 100  # score streams of the version 3 models: SCORE_SEED + 100 + their index


def _tiny_variances(model: nn.Module) -> None:
    """Channels whose running variance is 1e-6: folded, their scale is over 300 times the others (outliers)."""
    model.stem[2].running_var[[3, 11]] = 1e-6
    model.blocks[0][3].running_var[5] = 1e-6


def _mixed_outliers(model: nn.Module) -> None:
    """One bias value 3.0 among values under 0.18 (a q8 outlier), one 1e5 (beyond float16: the entry stays f32)."""
    model[0].bias[2] = 3.0
    model[4].bias[4] = 1.0e5


POST_FILL_V3 = {"cm_mp_folded_int8_outliers": _tiny_variances, "int8_mixed_groups": _mixed_outliers}


def build_valid_v3(name: str) -> bytes:
    """VALID_V3 vector ``name``: the package's writer with int8 leftovers (format version 3)."""
    skeleton, config_kwargs, save_kwargs, _, _ = VALID_V3[name]
    model = SKELETONS[skeleton]()
    _fill_dense(model)
    with torch.no_grad():
        POST_FILL_V3.get(name, lambda model: None)(model)
    config = MaskConfig(**{"distribution": "normal", "rp_mode": "copy", **config_kwargs})
    mask_(model, config)
    _fill_scores(model, V3_SCORE_INDEX + list(VALID_V3).index(name))
    return to_bytes(model, format_version=3, **{"dense_dtype": "int8", "fold_batchnorm": False, **save_kwargs})


def _q8_parts(e: Edit) -> dict[str, dict[str, np.ndarray]]:
    """Each q8 row's stored parts by key (copies): ``codes`` (u1), ``range`` (lo, step as f2), ``index`` (u2)
    and ``value`` (f2) of its outliers."""
    parts, codes_at, outliers_at = {}, 0, 0
    rows = [row for row in e.header["dense"]["tensors"] if row[2] == "q8"]
    for i, (key, shape, _, k) in enumerate(rows):
        n = math.prod(shape)
        parts[key] = {
            "codes": e.tensors["dense.q8"][codes_at : codes_at + n - k].copy(),
            "range": e.tensors["dense.q8_range"][2 * i : 2 * i + 2].copy(),
            "index": e.tensors["dense.q8_index"][outliers_at : outliers_at + k].copy(),
            "value": e.tensors["dense.q8_value"][outliers_at : outliers_at + k].copy(),
        }
        codes_at, outliers_at = codes_at + n - k, outliers_at + k
    return parts


def _set_q8(e: Edit, parts: dict[str, dict[str, np.ndarray]]) -> None:
    """The four q8 tensors rebuilt from ``parts`` in table order, each row's outlier count set to its index's."""
    rows = [row for row in e.header["dense"]["tensors"] if row[2] == "q8"]
    for row in rows:
        row[3] = int(parts[row[0]]["index"].size)
    for name, part, dtype in (("dense.q8", "codes", np.uint8), ("dense.q8_range", "range", np.float16),
                              ("dense.q8_index", "index", np.uint16), ("dense.q8_value", "value", np.float16)):
        e.tensors[name] = np.concatenate([np.asarray(parts[row[0]][part], dtype) for row in rows])


def _all_outliers_file(v3: dict[str, bytes], v2: dict[str, bytes]) -> bytes:
    """stem.2.bias stored as 16 outliers and no code (k = n): its float16 values, lo and step left as they were."""
    e = Edit(v3["cm_mp_folded_int8_outliers"])
    decoded = decode(v3["cm_mp_folded_int8_outliers"]).dense_arrays()["stem.2.bias"].reshape(-1)
    parts = _q8_parts(e)
    row = parts["stem.2.bias"]
    row["codes"] = np.zeros(0, np.uint8)
    row["index"] = np.arange(decoded.size, dtype=np.uint16)
    row["value"] = decoded.astype(np.float16)
    _set_q8(e, parts)
    return e.pack()


def _step_zero_file(v3: dict[str, bytes], v2: dict[str, bytes]) -> bytes:
    """blocks.0.0.fn.2.weight with step 0 and its codes (0 to 255) kept: every value that is no outlier is lo."""
    e = Edit(v3["cm_mp_folded_int8_outliers"])
    parts = _q8_parts(e)
    row = parts["blocks.0.0.fn.2.weight"]
    if np.unique(row["codes"]).size < 8:
        raise AssertionError("step 0: the row's codes should differ, so that c * 0 is seen to vanish")
    row["range"][1] = 0.0
    _set_q8(e, parts)
    return e.pack()


def _nonfinite_outliers_file(v3: dict[str, bytes], v2: dict[str, bytes]) -> bytes:
    """stem.2.weight's two outliers set to NaN and -inf: outlier values may be any float16 (v3 section 4)."""
    e = Edit(v3["cm_mp_folded_int8_outliers"])
    parts = _q8_parts(e)
    if parts["stem.2.weight"]["value"].size != 2:
        raise AssertionError("stem.2.weight should have two outliers")
    parts["stem.2.weight"]["value"][:] = [np.nan, -np.inf]
    _set_q8(e, parts)
    return e.pack()


def _without_q8_rows_file(v3: dict[str, bytes], v2: dict[str, bytes]) -> bytes:
    """A float16 version 2 file labelled version 3 (the metadata only): valid, no q8 row, no q8 tensor."""
    return rewrapped(v2["seq_onelayer_rice_d90_fp16"], metadata={KEY_VERSION: "3"})


DERIVED_V3 = {
    "cm_int8_every_value_an_outlier": ("test_convmixer", {"raw"}, "a q8 row whose 16 values are all outliers: no "
                                       "code, lo and step unused", _all_outliers_file),
    "cm_int8_step_zero": ("test_convmixer", {"raw"}, "a q8 row of step 0 with codes 0 to 255: every value that is no "
                          "outlier decodes to lo", _step_zero_file),
    "cm_int8_outliers_nonfinite": ("test_convmixer", {"raw"}, "a q8 row whose two outliers are NaN and -inf (allowed, "
                                   "as in other leftovers)", _nonfinite_outliers_file),
    "seq_v3_without_q8_rows": ("tiny_seq", {"rice"}, "a float16 file labelled version 3: no q8 row (valid, though "
                               "writers write version 2 for it)", _without_q8_rows_file),
}
NOT_CANONICAL_V3: set[str] = set()  # version 3 vectors whose bytes are not the writer's


def _valid_info(name: str, version: int = 1) -> tuple[str, set[str], str]:
    """(skeleton, codecs that must appear, description) of a VALID or DERIVED (DERIVED_V2) vector, or (version
    3) of a VALID_V3 or DERIVED_V3 one."""
    derived = {1: DERIVED, 2: DERIVED_V2, 3: DERIVED_V3}[version]
    if name in derived:
        skeleton, codecs, description, _ = derived[name]
        return skeleton, codecs, description
    skeleton, _, _, codecs, description = (VALID_V3 if version == 3 else VALID)[name]
    return skeleton, codecs, description


def describe_valid(name: str, blob: bytes, version: int = 1) -> dict:
    """The pinned facts of one valid vector, computed with the package (and checked by it)."""
    skeleton, codecs, description = _valid_info(name, version)
    pf = read_pemn(blob)
    if pf.format_version != version:
        raise AssertionError(f"{name}: format version {pf.format_version}, expected {version}")
    weights = decode_weights(pf)
    verify_fingerprint(pf, weights)
    found_codecs = {layer.codec for layer in pf.layers}
    if not codecs <= found_codecs:
        raise AssertionError(f"{name}: expected codecs {sorted(codecs)}, the writer chose {sorted(found_codecs)}")
    arch = pf.file_header.architecture.reference
    dense = pf.dense_arrays()
    not_canonical = name in {1: NOT_CANONICAL, 2: NOT_CANONICAL_V2, 3: NOT_CANONICAL_V3}[version]
    if version >= 2 and not not_canonical:  # the writer gives these bytes back (less the header tensor it makes)
        decoded = decode(blob)
        tensors = {key: t for key, t in decoded.tensors.items() if key != HEADER_TENSOR}
        if encode(Payload(decoded.file_header, tensors), version=version) != blob:
            raise AssertionError(f"{name}: the version {version} writer does not give these bytes back")
    if version == 3 and name in VALID_V3:  # the groups each writer vector is there for
        entries = pf.file_header.dense.tensors
        groups = {entry.group for entry in entries}
        if groups != V3_GROUPS[name] or (name in V3_OUTLIERS) != any(entry.outliers for entry in entries):
            raise AssertionError(f"{name}: the writer chose groups {sorted(groups)} (outliers: "
                                 f"{[entry.outliers for entry in entries]}), expected {sorted(V3_GROUPS[name])}")
    extra = {"canonical": False} if not_canonical else {}
    return {
        **extra,
        "description": description,
        "file_sha256": sha256(blob),
        "identity": file_identity(pf),
        "bytes": len(blob),
        "strategy": pf.config.strategy,
        "distribution": pf.config.distribution,
        "codecs": sorted(found_codecs),
        "architecture": arch["kind"],
        "load": {"registry": arch.get("name")} if arch["kind"] == "registry" else {"skeleton": skeleton},
        "fingerprint": pf.file_header.fingerprint.value,
        "layers": [  # a list: layer order is part of the format (fingerprint, masks tensor)
            {
                "name": layer.name,
                "shape": list(layer.shape),
                "kept": int(np.count_nonzero(decode_masks(pf)[layer.name])),
                "sha256": sha256(np.ascontiguousarray(weights[layer.name], "<f4").tobytes()),
            }
            for layer in pf.layers
        ],
        "dense": {
            key: {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": sha256(np.ascontiguousarray(a).tobytes())}
            for key, a in sorted(dense.items())
        },
    }


# --------------------------------------------------------------------------------------- editing
class Edit:
    """A decoded valid file to modify: header (dict), tensors (name -> writable numpy), metadata,
    and ``streams``: each layer's coded mask bytes (the ``masks`` tensor, split by ``layers[i].bytes``).

    ``layout`` is the file's format version as read (1: the header text in the metadata; 2: deflated in
    the ``header`` tensor, which ``tensors`` leaves out and ``pack`` makes again); ``pack`` keeps that
    layout whatever ``metadata["pemn.version"]`` is changed to. A version 2 header is as stored: derived
    keys absent (a raw layer's ``bytes`` is then taken from its stream, and set by ``pack`` only when the
    header has it)."""

    def __init__(self, blob: bytes):
        tensors, metadata = decode_container(blob)
        self.tensors = {name: np.array(t) for name, t in tensors.items()}
        self.metadata = dict(metadata)
        self.layout = int(self.metadata[KEY_VERSION])
        if self.layout == 1:
            self.header = json.loads(self.metadata[KEY_HEADER])
        else:
            self.header = json.loads(zlib.decompress(self.tensors.pop(HEADER_TENSOR).tobytes(), -15))
        sizes = [layer.get("bytes", -(-math.prod(layer["shape"]) // 8)) for layer in self.header["layers"]]
        cuts = np.cumsum(sizes)[:-1]
        self.streams = [s.copy() for s in np.split(self.tensors[MASKS_TENSOR], cuts)]

    def pack(self, *, sync_masks: bool = True, sign_data: bool = True, sign_header: bool = True,
             header_text: str | bytes | None = None, compress: Callable[[bytes], bytes] = deflate) -> bytes:
        """Re-encode. sync_masks: rebuild ``masks`` from ``streams`` and set each layer's ``bytes``;
        sign_data / sign_header: recompute ``checksums.data`` / ``pemn.header_sha256`` (version 2 always
        sets ``pemn.header_bytes``); ``compress``: how a version 2 header text becomes the ``header`` tensor."""
        if sync_masks:
            # one stream per layer: __init__ splits the masks tensor by the layers' bytes, and every edit that
            # replaces the layer list replaces the streams with it
            for layer, stream in zip(self.header["layers"], self.streams, strict=True):
                if self.layout == 1 or "bytes" in layer:
                    layer["bytes"] = int(stream.size)
            self.tensors[MASKS_TENSOR] = np.concatenate(self.streams) if self.streams else np.zeros(0, np.uint8)
        if sign_data:  # without the header tensor: version 2's rule (version 1 files have none)
            self.header["checksums"]["data"] = sha256(bytes(data_buffer(encode_container(self.tensors, {}))))
        text = header_text if header_text is not None else canonical_json(self.header)
        if self.layout == 1:
            assert isinstance(text, str)
            self.metadata[KEY_HEADER] = text
            if sign_header:
                self.metadata[KEY_HEADER_SHA256] = sha256(text.encode("utf-8"))
            return encode_container(self.tensors, self.metadata)
        encoded = text.encode("utf-8") if isinstance(text, str) else text
        self.metadata[KEY_HEADER_BYTES] = str(len(encoded))  # a wrong one: ``rewrapped``
        if sign_header:
            self.metadata[KEY_HEADER_SHA256] = sha256(encoded)
        block = np.frombuffer(compress(encoded), np.uint8)
        blob = encode_container({**self.tensors, HEADER_TENSOR: block}, self.metadata)
        if sign_data and v2_data_checksum(blob) != self.header["checksums"]["data"]:
            raise AssertionError("Edit.pack: checksums.data is not the version 2 checksum of the file")
        return blob

    def index(self, codec: str) -> int:
        """Index of the first layer that uses ``codec``."""
        return next(i for i, layer in enumerate(self.header["layers"]) if layer["codec"] == codec)


def v2_data_checksum(blob: bytes) -> str:
    """SHA-256 of the data buffer with the ``header`` tensor's byte range cut out (v2 section 5),
    computed from the container's own offsets."""
    entries, data = container_entries(blob)
    begin, end = entries[HEADER_TENSOR]["data_offsets"] if HEADER_TENSOR in entries else (0, 0)
    return sha256(data[:begin] + data[end:])


def _refingerprinted(e: Edit) -> bytes:
    """``e`` packed with the fingerprint of the weights it decodes to (the package decodes them; every
    check but the fingerprint passes first)."""
    pf = read_pemn(e.pack())
    weights = decode_weights(pf)
    e.header["fingerprint"]["value"] = weights_fingerprint([weights[layer.name] for layer in pf.layers])
    return e.pack()


def rewrapped(blob: bytes, *, metadata: dict[str, str | None] | None = None,
              tensors: dict[str, np.ndarray | None] | None = None) -> bytes:
    """``blob`` with metadata keys and tensors replaced (None: removed), nothing re-signed: for faults in
    what no checksum covers (the metadata, version 2's ``header`` tensor)."""
    found, meta = decode_container(blob)
    arrays = {name: np.array(t) for name, t in found.items()}
    meta = dict(meta)
    for key, value in (metadata or {}).items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    for name, array in (tensors or {}).items():
        if array is None:
            del arrays[name]
        else:
            arrays[name] = array
    return encode_container(arrays, meta)


def _dense_arrays(e: Edit) -> dict[str, np.ndarray]:
    """The leftovers of an edit by key, as stored (copies)."""
    offsets: dict[str, int] = {}
    out = {}
    for key, shape, group in e.header["dense"]["tensors"]:
        start, n = offsets.get(group, 0), math.prod(shape)
        out[key] = e.tensors[DENSE_PREFIX + group][start : start + n].reshape(shape).copy()
        offsets[group] = start + n
    return out


def _set_dense(e: Edit, arrays: dict[str, np.ndarray], table: list) -> None:
    """Rebuild the ``dense.<group>`` tensors from ``arrays`` in ``table`` order (values cast to the group)."""
    groups: dict[str, list[np.ndarray]] = {}
    for key, _, group in table:
        groups.setdefault(group, []).append(np.asarray(arrays[key], DENSE_GROUPS[group]).reshape(-1))
    e.tensors = {name: t for name, t in e.tensors.items() if not name.startswith(DENSE_PREFIX)}
    e.tensors.update({DENSE_PREFIX + group: np.concatenate(parts) for group, parts in groups.items()})
    e.header["dense"]["tensors"] = table


def _fingerprint_generated(e: Edit) -> str:
    """The fingerprint of an edit whose banks are generated and untiled and whose masks are raw (the
    ``dense`` strategy of ``seq_dense_raw_d50``), computed as section 10 says."""
    h = hashlib.sha256()
    config = e.header["config"]
    for layer, stream in zip(e.header["layers"], e.streams, strict=True):
        n = math.prod(layer["shape"])
        unit = rng.unit_values(config["seed"], layer["bank"], n, config["distribution"])
        mask = np.unpackbits(stream, count=n).astype(np.float32)
        weight = (unit * np.float32(layer["scale"])) * mask
        if not np.isfinite(weight).all():
            raise AssertionError("_fingerprint_generated: the weights are not finite (machine-dependent bits)")
        h.update(weight.astype("<f4").tobytes())
    return h.hexdigest()


def _rice_bits(e: Edit, i: int) -> int:
    """Bits of layer ``i``'s rice codewords (without the padding)."""
    layer = e.header["layers"][i]
    bits = np.unpackbits(e.streams[i])
    cursor = 0
    for _ in range(layer["ones"]):
        cursor = int(np.flatnonzero(bits[cursor:] == 0)[0]) + cursor + 1 + layer["rice_k"]
    return cursor


def raw_container(header: dict, data: bytes) -> bytes:
    """A safetensors file from an explicit header object (offsets as given) and data buffer."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def container_entries(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _rice_layers(
    base: bytes, shapes: list[list[int]], *, ones: int = 0, stream: bytes = b"", strategy: str = "mp"
) -> bytes:
    """A consistent file whose layers are Linear with the given shapes and rice masks (``ones``, ``stream``)."""
    e = Edit(base)
    e.header["config"].update(strategy=strategy, ratio=None, learn_values=False, rescale=True)
    sizes = [math.prod(s) for s in shapes]
    if strategy == "mp":
        e.header["banks"] = [{"index": 0, "size": max(sizes), "length": max(sizes), "tiling": "none", "stored": False}]
    else:  # dense
        e.header["banks"] = [
            {"index": i, "size": n, "length": n, "tiling": "none", "stored": False} for i, n in enumerate(sizes)
        ]
    e.header["layers"] = [
        {"name": f"l{i}", "type": "Linear", "shape": s, "bank": 0 if strategy == "mp" else i, "scale": kaiming_scale(s),
         "codec": "rice", "ones": ones, "rice_k": 0, "invert": False, "bytes": 0}
        for i, s in enumerate(shapes)
    ]
    e.tensors = {name: t for name, t in e.tensors.items() if not name.startswith(VALUES_PREFIX)}
    e.streams = [np.frombuffer(stream, np.uint8).copy() for _ in shapes]
    return e.pack()


def build_invalid(valid: dict[str, bytes]) -> dict[str, tuple[bytes, dict]]:
    """name -> (bytes, expectation). ``valid`` holds the valid vectors by name."""
    out: dict[str, tuple[bytes, dict]] = {}

    def add(name, blob, error, message, description, scope="readers", safetensors_rejects=False):
        entry = {"error": error, "message": message, "scope": scope, "description": description}
        if safetensors_rejects:
            entry["safetensors_rejects"] = True
        out[name] = (blob, entry)

    base = valid["seq_dense_raw_d50"]  # three raw layers: 144, 144 and 192 weights; fp32 leftovers
    rice = valid["seq_onelayer_rice_d10"]
    rp = valid["seq_rp_copy"]
    odd = valid["conv1d_dense_raw_d30"]
    cm = valid["cm_onelayer_d50"]
    (hlen,) = struct.unpack("<Q", base[:8])

    # ---- container (safetensors) level
    add("empty.bin", b"", "ContainerError", "too short", "zero bytes", safetensors_rejects=True)
    add("short_5_bytes.bin", base[:5], "ContainerError", "too short", "shorter than the 8-byte header length")
    add("png_magic.bin", b"\x89PNG\r\n\x1a\n" + bytes(24), "LimitError", "header claims",
        "a PNG signature read as a header length (> 100 MiB)", safetensors_rejects=True)
    add("header_len_past_eof.bin", struct.pack("<Q", 64) + b'{"__metadata__":{}}', "ContainerError", "header claims",
        "header length larger than the file", safetensors_rejects=True)
    add("header_not_json.bin", struct.pack("<Q", 16) + b"not json at all!", "ContainerError", "JSON",
        "header bytes that are not JSON", safetensors_rejects=True)
    add("header_not_utf8.bin", struct.pack("<Q", 8) + b'{"\xff":1} ', "ContainerError", "not valid UTF-8",
        "header bytes that are not UTF-8", safetensors_rejects=True)
    add("header_not_object.bin", struct.pack("<Q", 8) + b"[1,2,3] ", "ContainerError", "JSON object",
        "header is a JSON array")
    add("metadata_not_strings.bin", raw_container({"__metadata__": {"format": 1}}, b""), "ContainerError",
        "__metadata__", "__metadata__ value that is not a string", safetensors_rejects=True)
    add("truncated_in_length.pemn", base[:4], "ContainerError", "too short", "cut inside the header length")
    add("truncated_in_header.pemn", base[: 8 + hlen // 2], "ContainerError", "header claims",
        "cut inside the JSON header", safetensors_rejects=True)
    add("truncated_no_data.pemn", base[: 8 + hlen], "ContainerError", "outside", "cut right after the header",
        safetensors_rejects=True)
    add("truncated_last_byte.pemn", base[:-1], "ContainerError", "outside", "last data byte missing",
        safetensors_rejects=True)

    entries, data = container_entries(base)
    names = sorted((n for n in entries if n != "__metadata__"), key=lambda n: entries[n]["data_offsets"])
    second = names[1]  # right after names[0] in the buffer
    s0, s1 = entries[second]["data_offsets"]
    overlap = json.loads(json.dumps(entries))
    overlap[second]["data_offsets"] = [s0 - 4, s1 - 4]  # starts 4 bytes inside names[0]
    for n in names[2:]:
        overlap[n]["data_offsets"] = [o - 4 for o in overlap[n]["data_offsets"]]
    add("overlapping_offsets.pemn", raw_container(overlap, data[: s0 - 4] + data[s0:]), "ContainerError", "overlaps",
        "a tensor starting 4 bytes inside the previous one", safetensors_rejects=True)
    holed = json.loads(json.dumps(entries))
    last = names[-1]
    holed[last]["data_offsets"] = [o + 8 for o in holed[last]["data_offsets"]]
    l0 = entries[last]["data_offsets"][0]
    add("hole_in_data.pemn", raw_container(holed, data[:l0] + bytes(8) + data[l0:]), "ContainerError", "hole",
        "8 unowned bytes before the last tensor", safetensors_rejects=True)
    add("trailing_bytes.pemn", base + bytes(8), "ContainerError", "trailing", "8 bytes after the last tensor",
        safetensors_rejects=True)
    bf16 = json.loads(json.dumps(entries))
    bf16["dense.f32"]["dtype"] = "BF16"
    bf16["dense.f32"]["shape"] = [bf16["dense.f32"]["shape"][0] * 2]
    add("bf16_tensor.pemn", raw_container(bf16, data), "ContainerError", "unsupported dtype",
        "a BF16 tensor (valid safetensors, not a .pemn v1 dtype)")
    add("deep_json_container.bin", struct.pack("<Q", 20000) + b"[" * 10000 + b"]" * 10000, "ContainerError", "JSON",
        "safetensors header nested 10000 deep")

    # ---- metadata level
    plain = encode_container({"weight": np.arange(6, dtype=np.float32).reshape(2, 3)}, {})
    add("plain_safetensors.bin", plain, "HeaderError", "not a .pemn file", "a safetensors file with no PEMN metadata")
    e = Edit(base)
    e.metadata["format"] = "pt"
    add("format_pt.pemn", e.pack(), "HeaderError", "not a .pemn file", "__metadata__ format 'pt'")
    e = Edit(base)
    e.metadata[KEY_VERSION] = str(NEWER_VERSION)
    add(f"version_{NEWER_VERSION}.pemn", e.pack(), "VersionError", f"version {NEWER_VERSION}",
        "a newer format version")
    e = Edit(base)
    e.metadata[KEY_VERSION] = "0"
    add("version_0.pemn", e.pack(), "HeaderError", "pemn.version", "format version 0")
    e = Edit(base)
    e.metadata[KEY_VERSION] = "1.0"
    add("version_not_integer.pemn", e.pack(), "HeaderError", "pemn.version", "format version '1.0'")
    e = Edit(base)
    e.metadata[KEY_VERSION] = "\u00b2"
    add("version_superscript_two.pemn", e.pack(), "HeaderError", "pemn.version",
        "format version '\u00b2' (a Unicode digit)")
    e = Edit(base)
    del e.metadata[KEY_HEADER_SHA256]
    add("missing_header_sha256.pemn", e.pack(sign_header=False), "MissingKeyError", "pemn.header_sha256",
        "no pemn.header_sha256")
    e = Edit(base)
    e.header["provenance"] = {"tampered": True}
    add("header_sha256_mismatch.pemn", e.pack(sign_header=False), "ChecksumError", "header checksum",
        "header edited, its hash not updated")
    e = Edit(base)
    add("header_not_json.pemn", e.pack(header_text="{not json"), "HeaderError", "not valid JSON",
        "pemn.header is not JSON")
    e = Edit(base)
    add("header_not_object.pemn", e.pack(header_text="[]"), "HeaderError", "JSON object", "pemn.header is an array")
    e = Edit(base)
    text = canonical_json(e.header)
    add("header_deep_json.pemn", e.pack(header_text=text[:-1] + ',"zzz":' + "[" * 10000 + "]" * 10000 + "}"),
        "HeaderError", "JSON", "pemn.header nested 10000 deep")
    add("header_huge_integer.pemn", e.pack(header_text=text[:-1] + ',"zzz":' + "9" * 5000 + "}"), "HeaderError", "JSON",
        "a 5000-digit integer in pemn.header")
    add("header_nan.pemn", e.pack(header_text=text[:-1] + ',"zzz":NaN}'), "HeaderError", "JSON",
        "NaN (not JSON) in pemn.header")
    e = Edit(base)
    e.pack()
    lone = text[:-1] + ',"zzz":"\ud800"}'  # a raw unpaired surrogate: the container JSON escapes it as \ud800
    e.metadata[KEY_HEADER], e.metadata[KEY_HEADER_SHA256] = lone, sha256(lone.encode("utf-8", "surrogatepass"))
    add("metadata_lone_surrogate.pemn", encode_container(e.tensors, e.metadata), "ContainerError", "surrogate",
        "pemn.header holding an unpaired surrogate escape (not valid Unicode)")
    add("header_duplicate_key.pemn", e.pack(header_text=text[:-1] + ',"provenance":{"x":1}}'), "HeaderError",
        "duplicate", "pemn.header with the key 'provenance' twice")

    # ---- header keys and values
    e = Edit(base)
    del e.header["fingerprint"]
    add("missing_fingerprint.pemn", e.pack(), "MissingKeyError", "fingerprint", "no 'fingerprint' key")
    e = Edit(base)
    del e.header["layers"]
    add("missing_layers.pemn", e.pack(sync_masks=False), "MissingKeyError", "layers", "no 'layers' key")
    e = Edit(base)
    del e.header["layers"][0]["bytes"]
    add("missing_layer_bytes.pemn", e.pack(sync_masks=False), "MissingKeyError", "bytes", "a layer without 'bytes'")
    e = Edit(base)
    e.header["generator"]["name"] = "mt19937"
    add("generator_unknown.pemn", e.pack(), "HeaderError", "generator.name", "another generator")
    e = Edit(base)
    e.header["generator"]["seed"] += 1
    add("seed_mismatch.pemn", e.pack(), "HeaderError", "generator.seed", "generator.seed differs from config.seed")
    e = Edit(base)
    e.header["config"]["prune_rate"] = 0.5
    add("config_unknown_field.pemn", e.pack(), "HeaderError", "prune_rate",
        "a MaskConfig field this version does not know")
    e = Edit(base)
    e.header["config"]["density"] = 1.5
    add("config_density_out_of_range.pemn", e.pack(), "HeaderError", "density", "density 1.5")
    e = Edit(base)
    e.header["layers"], e.streams = [], []
    add("layers_empty.pemn", e.pack(), "HeaderError", "empty", "no masked layer")
    e = Edit(base)
    e.header["layers"][1]["name"] = e.header["layers"][0]["name"]
    add("layer_duplicate_name.pemn", e.pack(), "HeaderError", "duplicate", "two layers with one name")
    e = Edit(base)
    e.header["layers"][2]["shape"] = [192]
    add("layer_shape_1d.pemn", e.pack(), "ShapeError", "shape", "a one-dimensional layer shape")
    e = Edit(base)
    e.header["layers"][0]["type"] = "Embedding"
    add("layer_type_unknown.pemn", e.pack(), "HeaderError", "type", "layer type Embedding")
    e = Edit(base)
    e.header["layers"][2]["shape"] = [3, 65]
    add("shape_mismatch_header_tensor.pemn", e.pack(), "ShapeError", "raw mask",
        "header shape [3, 65], raw stream for [3, 64]")
    e = Edit(base)
    e.streams[2] = e.streams[2][:-1]
    add("wrong_mask_length.pemn", e.pack(), "ShapeError", "raw mask", "raw stream (and its 'bytes') one byte short")
    e = Edit(base)
    e.tensors[MASKS_TENSOR] = np.concatenate(e.streams)[:-1]
    add("masks_tensor_short.pemn", e.pack(sync_masks=False), "ShapeError", "masks",
        "masks tensor one byte shorter than the layers' bytes add up to")
    e = Edit(base)
    del e.tensors[MASKS_TENSOR]
    add("masks_tensor_missing.pemn", e.pack(sync_masks=False), "ShapeError", "masks", "no masks tensor")
    e = Edit(base)
    e.pack()
    e.tensors[MASKS_TENSOR] = e.tensors[MASKS_TENSOR].view(np.int8)
    add("masks_tensor_dtype.pemn", e.pack(sync_masks=False), "ShapeError", "uint8", "an int8 masks tensor")
    e = Edit(base)
    e.header["layers"][0]["bytes"] = -1
    add("layer_bytes_negative.pemn", e.pack(sync_masks=False), "HeaderError", "bytes", "bytes -1")
    e = Edit(base)
    e.header["layers"][0]["scale"] = 0.1
    add("scale_not_float32.pemn", e.pack(), "HeaderError", "float32", "scale 0.1 (not a float32 value)")
    e = Edit(base)
    text = canonical_json(e.header)
    old = f'"scale":{json.dumps(e.header["layers"][0]["scale"])}'
    huge_scale = text.replace(old, '"scale":1' + "0" * 400, 1)
    add("scale_huge_integer.pemn", e.pack(header_text=huge_scale), "HeaderError", "integer",
        "scale 10**400 written as an integer")
    e = Edit(base)
    e.header["layers"][0]["codec"] = "zstd"
    add("codec_unknown.pemn", e.pack(), "HeaderError", "codec", "codec 'zstd'")
    e = Edit(base)
    e.header["layers"][0]["ones"] = 145
    add("ones_exceeds_weights.pemn", e.pack(), "HeaderError", "ones", "ones 145 for 144 weights")
    e = Edit(base)
    e.header["layers"][0]["ones"] -= 1
    add("raw_ones_mismatch.pemn", e.pack(), "ShapeError", "kept weights",
        "raw mask with one more one than the header says")
    e = Edit(odd)  # layer 0 has 18 weights: 6 padding bits in its last byte
    e.streams[0][-1] |= 0x01
    add("raw_padding_nonzero.pemn", e.pack(), "ShapeError", "padding", "a padding bit set in a raw mask")
    e = Edit(base)
    bits = np.unpackbits(e.streams[0])
    one, zero = int(np.flatnonzero(bits)[0]), int(np.flatnonzero(bits == 0)[0])
    bits[one], bits[zero] = 0, 1  # same ones count: only the fingerprint can tell
    e.streams[0] = np.packbits(bits)
    add("mask_edited_resigned.pemn", e.pack(), "ChecksumError", "fingerprint",
        "two mask bits swapped, checksums recomputed: caught by the weight fingerprint")
    e = Edit(base)
    e.header["fingerprint"]["value"] = "0" * 64
    add("fingerprint_mismatch.pemn", e.pack(), "ChecksumError", "fingerprint", "fingerprint of other weights")

    # ---- rice
    e = Edit(rice)
    del e.header["layers"][e.index("rice")]["invert"]
    add("rice_missing_invert.pemn", e.pack(), "HeaderError", "invert", "rice layer without 'invert'")
    e = Edit(rice)
    e.header["layers"][e.index("rice")]["rice_k"] = 41
    add("rice_k_too_large.pemn", e.pack(), "HeaderError", "rice parameter k", "rice_k 41 (limit 40)")
    e = Edit(rice)
    i = e.index("rice")
    e.streams[i] = np.concatenate([e.streams[i], np.zeros(1, np.uint8)])
    add("rice_trailing_byte.pemn", e.pack(), "ShapeError", "after its last codeword",
        "a zero byte after the rice stream")
    e = Edit(rice)
    i = e.index("rice")
    layer = e.header["layers"][i]
    n = math.prod(layer["shape"])
    x = np.zeros(n + 64, bool)
    x[[3, 10, n + 40]] = True  # the third one points past the layer's last weight
    e.streams[i] = rice_encode(x, layer["rice_k"])
    layer["ones"], layer["invert"] = 3, False
    add("rice_past_end.pemn", e.pack(), "ShapeError", "past weight", "a rice codeword pointing past the layer")
    e = Edit(rice)
    i = e.index("rice")
    layer = e.header["layers"][i]
    x = np.zeros(math.prod(layer["shape"]), bool)
    x[[5, 6, 7]] = True
    e.streams[i] = rice_encode(x, 8)[:1]  # gaps 5, 0, 0 with k = 8: 27 bits, cut to the first byte
    layer.update(ones=1, rice_k=8, invert=False)
    add("rice_ends_inside_codeword.pemn", e.pack(), "ShapeError", "codeword", "a 9-bit codeword cut after 8 bits")
    e = Edit(rice)
    e.header["layers"][e.index("rice")]["ones"] = 0
    add("rice_empty_with_bytes.pemn", e.pack(), "ShapeError", "empty rice stream", "ones 0 but the stream has bytes")
    huge_ones = _rice_layers(rice, [[40000, 40000]], ones=1_600_000_000, stream=bytes(16), strategy="dense")
    add("rice_huge_ones.pemn", huge_ones, "ShapeError", "codewords need",
        "a 16-byte rice stream claiming 1.6e9 ones: refused before any allocation")

    # ---- limits
    add("layer_weights_1e12.pemn", _rice_layers(rice, [[1_000_000, 1_000_000]]), "LimitError", "limit",
        "one layer claiming 10**12 weights: refused before any allocation")
    add("total_weights_1e12.pemn", _rice_layers(rice, [[100_000, 100_000]] * 100), "LimitError", "limit",
        "100 layers of 10**10 weights (each under the per-layer limit), 10**12 in all")

    # ---- banks and stored values
    e = Edit(base)
    e.header["banks"] = e.header["banks"][:-1]
    add("banks_count_wrong.pemn", e.pack(), "HeaderError", "banks", "one bank fewer than the strategy makes")
    e = Edit(base)
    e.header["banks"][0]["size"] += 1
    add("bank_size_wrong.pemn", e.pack(), "HeaderError", "size", "bank size that the strategy does not give")
    e = Edit(base)
    e.pack()
    text = canonical_json(e.header)
    bank0 = canonical_json(e.header["banks"][0])
    size0 = e.header["banks"][0]["size"]
    size_float = text.replace(bank0, bank0.replace(f'"size":{size0}', f'"size":{size0}.0'), 1)
    add("bank_size_float.pemn", e.pack(header_text=size_float), "HeaderError", "size",
        f"bank size written as {size0}.0")
    e = Edit(base)
    e.header["layers"][1]["bank"] = 0
    add("layer_bank_wrong.pemn", e.pack(), "HeaderError", "bank", "a layer reading another layer's bank")
    e = Edit(rp)
    del e.tensors["values.0"]
    add("values_missing.pemn", e.pack(), "ShapeError", "values.0", "a stored bank without its values tensor")
    e = Edit(rp)
    e.tensors["values.0"] = np.concatenate([e.tensors["values.0"], np.ones(1, np.float32)])
    add("values_wrong_shape.pemn", e.pack(), "ShapeError", "values.0", "values tensor one entry longer than the bank")
    e = Edit(base)
    e.header["banks"][0]["stored"] = "yes"
    add("bank_stored_not_bool.pemn", e.pack(), "HeaderError", "stored", "banks[0].stored is a string")

    # ---- dense leftovers, architecture, checksums
    e = Edit(base)
    e.header["dense"]["dtype"] = "bfloat16"
    add("dense_dtype_unknown.pemn", e.pack(), "HeaderError", "dense.dtype", "dense.dtype bfloat16")
    e = Edit(base)
    del e.tensors["dense.f32"]
    add("dense_tensor_missing.pemn", e.pack(), "ShapeError", "dense.f32", "leftovers listed, their group tensor absent")
    e = Edit(base)
    e.header["dense"]["tensors"][0][1] = [e.header["dense"]["tensors"][0][1][0] + 1]
    add("dense_size_mismatch.pemn", e.pack(), "ShapeError", "dense.f32", "a table shape one entry longer than stored")
    e = Edit(base)
    e.header["dense"]["tensors"][0][2] = "f64"
    add("dense_group_unknown.pemn", e.pack(), "HeaderError", "dense.tensors", "a leftover in group 'f64'")
    e = Edit(base)
    e.header["dense"]["tensors"][1][0] = e.header["dense"]["tensors"][0][0]
    add("dense_duplicate_key.pemn", e.pack(), "HeaderError", "duplicate", "two leftovers with one key")
    e = Edit(base)
    e.header["architecture"] = {"kind": "pickle", "target": "model.pt"}
    add("architecture_kind_unknown.pemn", e.pack(), "HeaderError", "architecture.kind", "architecture kind 'pickle'")
    e = Edit(base)
    e.pack()
    del e.header["checksums"]["data"]
    add("checksums_without_data.pemn", e.pack(sign_data=False), "HeaderError", "checksums", "checksums without 'data'")
    e = Edit(base)
    e.tensors["extra.secret"] = np.arange(4, dtype=np.uint8)
    add("undescribed_tensor.pemn", e.pack(), "HeaderError", "extra.secret", "a tensor the header does not describe")
    e = Edit(base)
    e.pack()
    e.tensors["dense.f32"].view(np.uint8)[1] ^= 0x40  # one bit of one byte of a leftover
    add("data_checksum_mismatch.pemn", e.pack(sign_data=False), "ChecksumError", "data checksum",
        "one bit of a dense leftover flipped")
    e = Edit(base)
    e.pack()
    e.streams[1][0] ^= 0x80
    add("mask_byte_flipped.pemn", e.pack(sign_data=False), "ChecksumError", "data checksum",
        "one bit of a raw mask flipped")

    # ---- non-finite weights (spec section 10, row 23): refused before the fingerprint
    e = Edit(rp)
    e.tensors["values.0"][3] = np.nan
    add("values_nan.pemn", e.pack(), "ShapeError", "non-finite", "a stored unit value is NaN")
    e = Edit(valid["seq_mp_learned"])
    e.tensors["values.0"][0] = np.inf
    add("values_inf.pemn", e.pack(), "ShapeError", "non-finite", "a stored (learned) unit value is +inf")
    e = Edit(base)
    e.header["layers"][0]["scale"] = float(np.finfo(np.float32).max)
    add("scale_float32_max.pemn", e.pack(), "ShapeError", "not finite in float32",
        "scale float32 max: values above 1 overflow, masked-out ones would be NaN (fingerprint left as it was)")
    e = Edit(base)
    bound = np.float32(rng.unit_bound("normal"))
    scale = np.float32(np.finfo(np.float32).max / bound)
    with np.errstate(over="ignore"):
        while np.isfinite(np.float32(float(bound) * float(scale))):
            scale = np.nextafter(scale, np.float32(np.inf))
    e.header["layers"][0]["scale"] = float(scale)
    e.header["fingerprint"]["value"] = _fingerprint_generated(e)  # every actual weight is finite
    add("scale_over_bound.pemn", e.pack(), "ShapeError", "not finite in float32",
        "the smallest scale whose product with the normal bound 3.4641013 overflows: no actual weight does "
        "(fingerprint correct), refused by the bound rule")
    e = Edit(rp)
    e.tensors["values.0"][0] = np.float32(3e38)
    e.header["layers"][0]["scale"] = 2.0
    add("values_large_scale_overflow.pemn", e.pack(), "ShapeError", "not finite in float32",
        "a finite stored value 3e38 read by a layer of scale 2: the product overflows")

    # ---- reader rules for what the spec first wrote for writers only
    e = Edit(base)
    e.header["banks"][0]["stored"] = True
    e.tensors["values.0"] = rng.unit_values(e.header["config"]["seed"], 0, e.header["banks"][0]["size"])
    add("bank_stored_unexpected.pemn", e.pack(), "HeaderError", "stored",
        "strategy dense without learned values, bank 0 stored anyway (with its vector)")
    e = Edit(rp)
    e.header["banks"][0]["stored"] = False
    del e.tensors["values.0"]
    add("bank_not_stored_rp.pemn", e.pack(), "HeaderError", "stored", "an rp bank not stored")
    e = Edit(base)
    arrays, table = _dense_arrays(e), e.header["dense"]["tensors"]
    table[0][2] = "f16"
    _set_dense(e, arrays, table)
    add("dense_f16_in_float32_file.pemn", e.pack(), "HeaderError", "dense.dtype",
        "dense.dtype float32 with a leftover in group f16")
    text = base[8 : 8 + hlen].rstrip(b" ") + b"\x00"
    add("container_padding_nul.pemn", struct.pack("<Q", len(text)) + text + base[8 + hlen :], "ContainerError",
        "JSON", "safetensors header padded with a NUL byte (only JSON whitespace may follow the object)",
        safetensors_rejects=True)

    # ---- producer, architecture and folded BatchNorm checked as the tables say
    e = Edit(base)
    e.header["producer"] = "pemn-compress 0.1.0"
    add("producer_not_object.pemn", e.pack(), "HeaderError", "producer", "producer is a string")
    e = Edit(base)
    del e.header["producer"]["version"]
    add("producer_version_missing.pemn", e.pack(), "HeaderError", "producer", "producer without version")
    e = Edit(cm)
    del e.header["architecture"]["name"]
    add("architecture_registry_name_missing.pemn", e.pack(), "HeaderError", "architecture.name",
        "a registry reference without a name")
    e = Edit(cm)
    e.header["architecture"]["kwargs"] = []
    add("architecture_registry_kwargs_list.pemn", e.pack(), "HeaderError", "architecture.kwargs",
        "registry kwargs that are an array")
    e = Edit(cm)
    e.header["architecture"] = {"kind": "import", "target": "os.system", "kwargs": {}}
    add("architecture_import_target_no_colon.pemn", e.pack(), "HeaderError", "architecture.target",
        "an import target that is not module:function")
    folded = valid["seq_rp_rand_maxseed_folded"]
    e = Edit(folded)
    e.header["dense"]["folded_batchnorm"].append(1)
    add("folded_batchnorm_not_string.pemn", e.pack(), "HeaderError", "folded_batchnorm", "a folded name that is 1")
    e = Edit(folded)
    e.header["dense"]["folded_batchnorm"].append(e.header["dense"]["folded_batchnorm"][0])
    add("folded_batchnorm_duplicate.pemn", e.pack(), "HeaderError", "folded_batchnorm", "a folded name twice")
    e = Edit(folded)
    e.header["dense"]["folded_batchnorm"].append("7")
    add("folded_batchnorm_no_entries.pemn", e.pack(), "HeaderError", "folded_batchnorm",
        "a folded name with no weight or bias in the table")
    e = Edit(folded)
    bn = e.header["dense"]["folded_batchnorm"][0]
    e.header["dense"]["tensors"].append([f"{bn}.running_mean", [4], "f32"])
    e.tensors["dense.f32"] = np.concatenate([e.tensors["dense.f32"], np.zeros(4, np.float32)])
    add("folded_batchnorm_running_stats.pemn", e.pack(), "HeaderError", "folded_batchnorm",
        "a folded BatchNorm whose running_mean is still stored")

    # ---- one class per fault: wrong JSON type = HeaderError, integer out of range = ShapeError
    e = Edit(base)
    e.header["layers"][2]["shape"] = [3, 64.0]
    add("layer_shape_float_dim.pemn", e.pack(), "HeaderError", "dimension must be an integer",
        "a layer dimension written 64.0")
    e = Edit(base)
    e.header["layers"][2]["shape"] = [0, 64]
    add("layer_shape_zero_dim.pemn", e.pack(), "ShapeError", "shape", "a layer dimension 0")
    e = Edit(base)
    e.header["dense"]["tensors"][0][1] = [float(e.header["dense"]["tensors"][0][1][0])]
    add("dense_shape_float_dim.pemn", e.pack(), "HeaderError", "dimension must be an integer",
        "a leftover dimension written as a float")
    e = Edit(base)
    e.header["dense"]["tensors"][0][1] = [-4]
    add("dense_shape_negative_dim.pemn", e.pack(), "ShapeError", "shape", "a leftover dimension -4")

    # ---- JSON depth (scalar 0, array/object 1 + deepest member) and rice padding bits
    e = Edit(base)
    e.header["provenance"] = {"deep": _nested(63)}
    add("header_depth_65.pemn", e.pack(), "HeaderError", "deeper than 64", "pemn.header nested 65 deep")
    e = Edit(rice)
    i = next(j for j, layer in enumerate(e.header["layers"])
             if layer["codec"] == "rice" and layer["ones"] and _rice_bits(e, j) % 8)
    e.streams[i][-1] |= 0x01  # the last padding bit
    add("rice_padding_one_bit.pemn", e.pack(), "ShapeError", "after its last codeword",
        "a one among the (fewer than 8) padding bits after the last rice codeword")

    # ---- what a second independent reader found unsaid (formats/pemn-v1.md section 16, third list)
    e = Edit(base)
    e.header["fingerprint"]["value"] = e.header["fingerprint"]["value"].upper()
    add("fingerprint_uppercase_hex.pemn", e.pack(), "HeaderError", "lowercase hex",
        "fingerprint.value in uppercase hex (the right digest otherwise): malformed, not a mismatch")
    e = Edit(base)
    e.header["checksums"]["data"] = e.header["checksums"]["data"].upper()
    add("checksums_uppercase_hex.pemn", e.pack(sign_data=False), "HeaderError", "lowercase hex",
        "checksums.data in uppercase hex (the right digest otherwise): malformed, not a mismatch")
    add("header_sha256_uppercase.pemn", rewrapped(base, metadata={KEY_HEADER_SHA256: Edit(base).metadata[
        KEY_HEADER_SHA256].upper()}), "HeaderError", "lowercase hex", "pemn.header_sha256 in uppercase hex")
    e = Edit(base)
    e.header["provenance"] = "dataset: mnist"
    add("provenance_not_object.pemn", e.pack(), "HeaderError", "provenance", "provenance is a string")
    e = Edit(base)
    e.header["provenance"] = None
    add("provenance_null.pemn", e.pack(), "HeaderError", "provenance",
        "provenance null (the optional key is absent or an object)")
    e = Edit(base)
    e.header["layers"][2]["scale"] = 0.0
    e.header["fingerprint"]["value"] = _fingerprint_generated(e)  # right for scale 0: the only fault is 1e-400
    e.pack()
    add("scale_underflow.pemn", e.pack(header_text=canonical_json(e.header).replace('"scale":0.0', '"scale":1e-400')),
        "HeaderError", "underflows", "layer 2's scale written 1e-400: a nonzero decimal binary64 rounds to zero "
        "(the fingerprint is that of scale 0)")
    bom = b"\xef\xbb\xbf" + base[8 : 8 + hlen].rstrip(b" ")
    bom += b" " * (-len(bom) % 8)
    add("container_bom.pemn", struct.pack("<Q", len(bom)) + bom + base[8 + hlen :], "ContainerError", "BOM",
        "safetensors JSON preceded by a UTF-8 byte order mark (not JSON whitespace)", safetensors_rejects=True)
    e = Edit(base)
    add("header_bom.pemn", e.pack(header_text="\ufeff" + canonical_json(e.header)), "HeaderError", "BOM",
        "pemn.header text beginning with U+FEFF (a byte order mark; hashed as stored)")
    e = Edit(base)
    e.header["layers"][2]["shape"] = [3, 64, 1, 1]
    add("layer_linear_4d_shape.pemn", e.pack(), "ShapeError", "dimensions",
        "a Linear layer of shape [3, 64, 1, 1] (the same 192 weights, fingerprint unchanged)")
    e = Edit(base)
    e.header["layers"][0]["shape"] = [4, 36]
    add("layer_conv2d_2d_shape.pemn", e.pack(), "ShapeError", "dimensions",
        "a Conv2d layer of shape [4, 36] (the same 144 weights, fingerprint unchanged)")
    e = Edit(base)
    next(row for row in e.header["dense"]["tensors"] if row[0] == "7.bias")[0] = "7.weight"
    add("dense_key_masked_weight.pemn", e.pack(), "HeaderError", "masked layer",
        "leftover '7.bias' renamed '7.weight': the key of masked layer '7''s weight")
    e = Edit(base)
    e.tensors["values.0"] = rng.unit_values(1, 0, 144, "normal")
    add("values_tensor_not_stored.pemn", e.pack(), "HeaderError", "values.0",
        "a values.0 tensor of the right shape while bank 0 is generated (stored false)")
    e = Edit(base)
    e.tensors["dense.i64"] = np.zeros(0, np.int64)
    add("dense_group_unused.pemn", e.pack(), "HeaderError", "dense.i64",
        "an empty dense.i64 tensor that no leftover uses")

    # ---- trust: valid data, but loading it would import and call os.system
    e = Edit(cm)
    e.header["architecture"] = {"kind": "import", "target": "os:system",
                                "kwargs": {"command": "echo this .pemn vector must never run code"}}
    add("architecture_import_os_system.pemn", e.pack(), "TrustError", "trust_code",
        "architecture imports os:system: pemn.load must refuse without trust_code and never call it; "
        "readers that build no architecture read it as valid data", scope="load")
    return out


def build_invalid_v2(v2: dict[str, bytes], v1: dict[str, bytes]) -> dict[str, tuple[bytes, dict]]:
    """name -> (bytes, expectation) of the version 2 invalid set: every row formats/pemn-v2.md section 6
    changes and each derivation rule of its section 4. ``v2`` / ``v1``: the VALID vectors by name."""
    out: dict[str, tuple[bytes, dict]] = {}

    def add(name, blob, error, message, description):
        out[name] = (blob, {"error": error, "message": message, "scope": "readers", "description": description})

    base = v2["seq_dense_raw_d50"]  # three raw layers: 144, 144 and 192 weights; fp32 leftovers
    rice = v2["seq_onelayer_rice_d10"]
    text = canonical_json(Edit(base).header).encode("utf-8")
    stream = deflate(text)

    # ---- metadata (rows 7 to 11b)
    e = Edit(base)
    del e.metadata[KEY_VERSION]
    add("missing_version.pemn", e.pack(), "MissingKeyError", "pemn.version", "no pemn.version")
    add(f"version_{NEWER_VERSION}.pemn", rewrapped(base, metadata={KEY_VERSION: str(NEWER_VERSION)}), "VersionError",
        f"version {NEWER_VERSION}", "a version 2 file labelled with a newer format version")
    add("missing_header_bytes.pemn", rewrapped(base, metadata={KEY_HEADER_BYTES: None}), "MissingKeyError",
        KEY_HEADER_BYTES, "no pemn.header_bytes")
    add("missing_header_sha256.pemn", rewrapped(base, metadata={KEY_HEADER_SHA256: None}), "MissingKeyError",
        KEY_HEADER_SHA256, "no pemn.header_sha256")
    add("header_bytes_not_digits.pemn", rewrapped(base, metadata={KEY_HEADER_BYTES: hex(len(text))}), "HeaderError",
        KEY_HEADER_BYTES, f"pemn.header_bytes {hex(len(text))!r}: the right length, not in decimal digits")
    arabic = "".join(chr(0x660 + int(d)) for d in str(len(text)))
    add("header_bytes_unicode_digits.pemn", rewrapped(base, metadata={KEY_HEADER_BYTES: arabic}), "HeaderError",
        KEY_HEADER_BYTES, "pemn.header_bytes: the right length in Arabic-Indic digits (not ASCII)")
    add("header_bytes_10_digits.pemn", rewrapped(base, metadata={KEY_HEADER_BYTES: f"{len(text):010d}"}),
        "HeaderError", KEY_HEADER_BYTES, f"pemn.header_bytes {len(text):010d}: the right length in 10 digits")
    add("header_bytes_over_limit.pemn", rewrapped(base, metadata={KEY_HEADER_BYTES: str(MAX_HEADER_BYTES + 1)}),
        "LimitError", KEY_HEADER_BYTES, "pemn.header_bytes one more than MAX_HEADER_BYTES: refused before inflating")

    # ---- the header tensor (rows 11c, 11d)
    add("header_tensor_missing.pemn", rewrapped(base, tensors={HEADER_TENSOR: None}), "ShapeError",
        f"tensor {HEADER_TENSOR!r}", "no header tensor")
    block = np.frombuffer(stream, np.uint8)
    add("header_tensor_i8.pemn", rewrapped(base, tensors={HEADER_TENSOR: block.view(np.int8)}), "ShapeError",
        f"tensor {HEADER_TENSOR!r}", "the header tensor stored as I8")
    add("header_tensor_2d.pemn", rewrapped(base, tensors={HEADER_TENSOR: block.reshape(1, -1)}), "ShapeError",
        f"tensor {HEADER_TENSOR!r}", "the header tensor of shape [1, n]")
    wrapped = np.frombuffer(zlib.compress(text, 9), np.uint8)
    add("header_zlib_wrapper.pemn", rewrapped(base, tensors={HEADER_TENSOR: wrapped}), "HeaderError",
        "not a raw DEFLATE stream", "the header text with a zlib wrapper (RFC 1950), not a raw DEFLATE stream")
    add("header_cut_short.pemn", rewrapped(base, tensors={HEADER_TENSOR: block[: block.size // 2]}), "HeaderError",
        "cut short", "the header stream cut in half: it ends before its final block")
    trailing = np.concatenate([block, np.zeros(1, np.uint8)])
    add("header_trailing_byte.pemn", rewrapped(base, tensors={HEADER_TENSOR: trailing}), "HeaderError",
        "after its final DEFLATE block", "a zero byte after the end of the final block")
    bomb = np.frombuffer(deflate(b" " * (32 << 20)), np.uint8)
    add("header_inflation_bomb.pemn", rewrapped(base, metadata={KEY_HEADER_BYTES: "10"},
                                                tensors={HEADER_TENSOR: bomb}),
        "HeaderError", "more than", f"a {bomb.size}-byte stream of 32 MiB of spaces, 10 bytes declared: "
        "refused after inflating 11 bytes")
    add("header_inflates_short.pemn", rewrapped(base, metadata={KEY_HEADER_BYTES: str(len(text) + 1)}),
        "HeaderError", f"bytes; {KEY_HEADER_BYTES} declares", "pemn.header_bytes one more than the text's length")

    # ---- the header text (rows 11e, 12)
    e = Edit(base)
    e.header["provenance"] = {"tampered": True}
    add("header_sha256_mismatch.pemn", e.pack(sign_header=False), "ChecksumError", "header checksum",
        "header edited, its hash not updated (pemn.header_bytes updated)")
    e = Edit(base)
    e.header["provenance"] = {"note": "@@"}
    latin1 = canonical_json(e.header).encode("utf-8").replace(b"@@", b"na\xefve")  # Latin-1 i-diaeresis, not UTF-8
    add("header_not_utf8.pemn", e.pack(header_text=latin1), "HeaderError", "UTF-8",
        "the header text holds a Latin-1 byte 0xEF (hashed and declared as stored)")
    e = Edit(base)
    add("header_not_json.pemn", e.pack(header_text="{not json"), "HeaderError", "not valid JSON",
        "the inflated header text is not JSON")

    add("header_sha256_uppercase.pemn", rewrapped(base, metadata={KEY_HEADER_SHA256: sha256(text).upper()}),
        "HeaderError", "lowercase hex", "pemn.header_sha256 in uppercase hex (the right digest otherwise)")
    add("header_bom.pemn", Edit(base).pack(header_text=b"\xef\xbb\xbf" + text), "HeaderError", "BOM",
        "the inflated header text begins with a UTF-8 byte order mark (hashed and declared as stored)")

    # ---- header keys and derivation (rows 13 to 18)
    e = Edit(base)
    del e.header["config"]
    add("missing_config.pemn", e.pack(), "MissingKeyError", "config", "no 'config' key (nothing to derive from)")
    e = Edit(base)
    e.header["generator"] = {"name": "philox4x32-10", "seed": e.header["config"]["seed"] + 1}
    add("generator_seed_mismatch.pemn", e.pack(), "HeaderError", "generator.seed",
        "generator present with another seed than config.seed")
    e = Edit(base)
    e.header["banks"] = Edit(v1["seq_dense_raw_d50"]).header["banks"]
    e.header["banks"][0]["size"] += 1
    add("banks_present_wrong_size.pemn", e.pack(), "HeaderError", "banks[0].size",
        "banks present, bank 0 one value larger than derived")
    e = Edit(base)
    e.header["layers"][1]["bank"] = 0
    add("layer_bank_wrong.pemn", e.pack(), "HeaderError", "bank must be", "layer 1's bank present and 0 (derived: 1)")
    e = Edit(base)
    e.header["layers"][0]["bank"] = -1
    add("layer_bank_minus_one.pemn", e.pack(), "HeaderError", "bank must be",
        "layer 0's bank present and -1 (a value a reader might use to mean 'left out')")
    e = Edit(base)
    e.header["layers"][2]["bytes"] = 25  # 192 weights: 24 bytes
    add("raw_layer_bytes_wrong.pemn", e.pack(sync_masks=False), "ShapeError", "raw mask",
        "a raw layer's bytes present and 25 (derived: 24)")
    e = Edit(rice)
    del e.header["layers"][e.index("rice")]["bytes"]
    add("rice_layer_bytes_missing.pemn", e.pack(sync_masks=False), "MissingKeyError", "bytes",
        "a rice layer without bytes (only a raw layer's is derived)")
    e = Edit(v2["seq_mp_paper_signed"])
    layer = e.header["layers"][0]
    layer["scale"] = kaiming_scale(layer["shape"])
    _refingerprinted(e)
    del layer["scale"]
    add("scale_left_out_not_derived.pemn", e.pack(), "ChecksumError", "fingerprint",
        "layer 0's fingerprinted scale is its own Kaiming scale, left out: readers derive the largest layer's")

    # ---- tensors and checksums (rows 21, 22)
    e = Edit(v1["seq_dense_raw_d50"])
    e.tensors[HEADER_TENSOR] = block.copy()
    add("v1_with_header_tensor.pemn", e.pack(), "HeaderError", "not described",
        "a version 1 file with a 'header' tensor (the deflated header): unknown in version 1")
    add("v1_layout_labelled_2.pemn", rewrapped(v1["seq_dense_raw_d50"], metadata={KEY_VERSION: "2"}),
        "MissingKeyError", KEY_HEADER_BYTES, "a version 1 file (header in the metadata, no header tensor) "
        "labelled version 2")
    add("v2_labelled_1.pemn", rewrapped(base, metadata={KEY_VERSION: "1"}), "MissingKeyError", f"{KEY_HEADER!r}",
        "a version 2 file labelled version 1")
    e = Edit(base)
    e.pack()
    e.streams[1][0] ^= 0x80
    add("mask_byte_flipped.pemn", e.pack(sign_data=False), "ChecksumError", "data checksum",
        "one bit of a raw mask flipped")
    e = Edit(base)
    e.header["checksums"]["data"] = sha256(bytes(data_buffer(base)))
    add("data_checksum_whole_buffer.pemn", e.pack(sign_data=False), "ChecksumError", "data checksum",
        "checksums.data set to the SHA-256 of the valid file's whole data buffer, its header tensor included "
        "(version 1's span)")
    return out


def build_invalid_v3(v3: dict[str, bytes], v2: dict[str, bytes]) -> dict[str, tuple[bytes, dict]]:
    """name -> (bytes, expectation) of the version 3 invalid set: each rule of formats/pemn-v3.md sections 2
    to 4 and the newer version. ``v3``: the VALID_V3 vectors by name, ``v2``: the version 2 VALID ones."""
    out: dict[str, tuple[bytes, dict]] = {}

    def add(name, blob, error, message, description):
        out[name] = (blob, {"error": error, "message": message, "scope": "readers", "description": description})

    base = v3["cm_mp_folded_int8_outliers"]  # ten q8 rows of 16 values; stem.2.weight has outliers at 3 and 11
    rows = Edit(base).header["dense"]["tensors"]
    two = next(i for i, row in enumerate(rows) if row[3] == 2)  # a row with two outliers
    none = next(i for i, row in enumerate(rows) if row[3] == 0)  # a row without

    # ---- version (rows 8 to 10)
    add(f"version_{NEWER_VERSION}.pemn", rewrapped(base, metadata={KEY_VERSION: str(NEWER_VERSION)}), "VersionError",
        f"version {NEWER_VERSION}", "a version 3 file labelled with a newer format version")

    # ---- q8 rows (section 2, row 19: HeaderError)
    e = Edit(base)
    e.header["dense"]["dtype"] = "float16"
    add("q8_in_float16_file.pemn", e.pack(), "HeaderError", "group 'q8' but dense.dtype",
        "q8 rows in a file whose dense.dtype is float16")
    add("int8_in_version_2.pemn", rewrapped(base, metadata={KEY_VERSION: "2"}), "HeaderError", "dense.dtype",
        "a version 3 int8 file labelled version 2: int8 is an unknown dense.dtype there")
    e = Edit(base)
    e.header["dense"]["dtype"] = "float16"
    e.metadata[KEY_VERSION] = "2"
    add("q8_row_in_version_2.pemn", e.pack(), "HeaderError", "dense.tensors[",
        "q8 rows in a version 2 float16 file: q8 is an unknown group there")
    e = Edit(base)
    e.header["dense"]["tensors"][none] = e.header["dense"]["tensors"][none][:3]
    add("q8_row_three_elements.pemn", e.pack(), "HeaderError", "dense.tensors[",
        "a q8 row of three elements (its outlier count left out; it has none)")
    e = Edit(base)
    e.header["dense"]["tensors"][none].append(0)
    add("q8_row_five_elements.pemn", e.pack(), "HeaderError", "dense.tensors[", "a q8 row with a fifth element 0")
    e = Edit(v3["int8_mixed_groups"])
    next(row for row in e.header["dense"]["tensors"] if row[2] == "f16").append(0)
    add("f16_row_four_elements.pemn", e.pack(), "HeaderError", "dense.tensors[",
        "an f16 row with a fourth element 0 (only q8 rows have four)")
    e = Edit(base)
    e.header["dense"]["tensors"][none][3] = 17
    add("q8_outliers_above_n.pemn", e.pack(), "HeaderError", "outlier count",
        "a q8 row of 16 values claiming 17 outliers")
    e = Edit(base)
    e.header["dense"]["tensors"][none][3] = -1
    add("q8_outliers_negative.pemn", e.pack(), "HeaderError", "outlier count", "a q8 row claiming -1 outliers")
    e = Edit(base)
    e.header["dense"]["tensors"][none][3] = False
    add("q8_outliers_boolean.pemn", e.pack(), "HeaderError", "outlier count",
        "a q8 row without outliers whose count is false (a boolean, not the integer 0)")
    e = Edit(base)
    e.pack()
    text = canonical_json(e.header)
    key = rows[two][0]
    counted = f'["{key}",[16],"q8",2]'
    if counted not in text:
        raise AssertionError(f"{counted} is not in the header text")
    add("q8_outliers_float.pemn", e.pack(header_text=text.replace(counted, counted[:-2] + "2.0]", 1)), "HeaderError",
        "outlier count", f"{key}'s outlier count written 2.0 (a JSON number that is not an integer)")
    e = Edit(base)
    parts = _q8_parts(e)
    e.header["dense"]["tensors"].append(["big", [65537], "q8", 0])
    parts["big"] = {"codes": np.arange(65537) % 256, "range": np.array([0.0, 1.0]), "index": np.zeros(0),
                    "value": np.zeros(0)}
    _set_q8(e, parts)
    add("q8_row_65537_values.pemn", e.pack(), "HeaderError", "at most 65,536",
        "a q8 row of 65,537 values (outlier positions are 16-bit), its codes stored: no other fault")

    # ---- q8 tensors (section 3, row 19: ShapeError; row 21: HeaderError)
    for name, kind, change, what in (
        ("dense.q8", "missing", None, "absent"),
        ("dense.q8", "i8", lambda a: a.view(np.int8), "stored as I8"),
        ("dense.q8", "2d", lambda a: a.reshape(1, -1), "of shape [1, n]"),
        ("dense.q8", "one_more", lambda a: np.concatenate([a, a[:1]]), "one code longer"),
        ("dense.q8_range", "missing", None, "absent"),
        ("dense.q8_range", "f32", lambda a: a.astype(np.float32), "stored as F32 (the same values)"),
        ("dense.q8_range", "short", lambda a: a[:-1], "one value short (the last step missing)"),
        ("dense.q8_index", "missing", None, "absent"),
        ("dense.q8_index", "i16", lambda a: a.view(np.int16), "stored as I16"),
        ("dense.q8_index", "one_more", lambda a: np.concatenate([a, a[-1:] + 1]), "one position longer"),
        ("dense.q8_value", "missing", None, "absent"),
        ("dense.q8_value", "u16", lambda a: a.view(np.uint16), "stored as U16 (the same bytes)"),
        ("dense.q8_value", "short", lambda a: a[:-1], "one value short"),
    ):
        e = Edit(base)
        if change is None:
            del e.tensors[name]
        else:
            e.tensors[name] = change(e.tensors[name])
        add(f"{name.replace('dense.', '')}_{kind}.pemn", e.pack(), "ShapeError", f"tensor {name!r}",
            f"tensor {name} {what}")
    e = Edit(v3["cm_rp_int8_unfolded"])  # q8 rows, none with an outlier: dense.q8_index and q8_value are empty
    if e.tensors["dense.q8_index"].size:
        raise AssertionError("cm_rp_int8_unfolded should have no outlier")
    del e.tensors["dense.q8_index"]
    add("q8_index_empty_missing.pemn", e.pack(), "ShapeError", "tensor 'dense.q8_index'",
        "q8 rows without outliers and no dense.q8_index tensor (it must be there, of length 0)")
    e = Edit(v3["seq_onelayer_int8_no_q8"])
    e.tensors.update({"dense.q8": np.zeros(0, np.uint8), "dense.q8_range": np.zeros(0, np.float16),
                      "dense.q8_index": np.zeros(0, np.uint16), "dense.q8_value": np.zeros(0, np.float16)})
    add("q8_tensors_without_q8_rows.pemn", e.pack(), "HeaderError", "not described",
        "an int8 file with no q8 row holding the four q8 tensors, empty (row 21)")
    e = Edit(v2["seq_onelayer_rice_d90_fp16"])
    e.tensors["dense.q8_range"] = np.zeros(0, np.float16)
    add("q8_tensor_in_version_2.pemn", e.pack(), "HeaderError", "not described",
        "a version 2 file holding an empty dense.q8_range: an unknown tensor there")

    # ---- decoding (section 4, row 23b: ShapeError)
    for name, row, at, value, what in (
        ("q8_lo_nan.pemn", none, 0, np.nan, "lo NaN"),
        ("q8_lo_minus_inf.pemn", none, 0, -np.inf, "lo -inf"),
        ("q8_step_inf.pemn", none, 1, np.inf, "step +inf"),
    ):
        e = Edit(base)
        parts = _q8_parts(e)
        parts[rows[row][0]]["range"][at] = value
        _set_q8(e, parts)
        add(name, e.pack(), "ShapeError", "not finite", f"{rows[row][0]}'s {what}")
    for name, positions, what in (
        ("q8_positions_decreasing.pemn", lambda p: p[::-1], "in decreasing order"),
        ("q8_positions_repeated.pemn", lambda p: np.array([p[0], p[0]]), "the same position twice"),
        ("q8_position_at_n.pemn", lambda p: np.array([p[0], 16]), "the last one 16, the row's number of values"),
    ):
        e = Edit(base)
        parts = _q8_parts(e)
        row = parts[rows[two][0]]
        row["index"] = positions(row["index"])
        _set_q8(e, parts)
        add(name, e.pack(), "ShapeError", "outlier positions", f"{rows[two][0]}'s two outlier positions {what}")
    return out


# --------------------------------------------------------------------------------------- checks
def package_outcome(blob: bytes, scope: str) -> BaseException | None:
    """What the package raises on ``blob``: read + decode + fingerprint, or ``pemn.load`` (scope load)."""
    try:
        if scope == "load":
            from pemn_compress.api import load

            load(blob, device="cpu")
        else:
            pf = read_pemn(blob)
            verify_fingerprint(pf, decode_weights(pf))
    except Exception as exc:  # noqa: BLE001 - the point is to see what comes out
        return exc
    return None


def check_invalid(name: str, blob: bytes, entry: dict) -> None:
    """The expectation is what the package does today: it raises the expected error class and message."""
    exc = package_outcome(blob, entry["scope"])
    matches = exc is not None and type(exc).__name__ == entry["error"] and entry["message"] in str(exc)
    if not matches:
        raise AssertionError(f"{name}: expected {entry['error']} with {entry['message']!r}, the package gave {exc!r}")


# --------------------------------------------------------------------------------------- main
def _dump(path: Path, vectors: dict, version: int = 1) -> None:
    """One vector per line: small, diffable, deterministic."""
    lines = [
        f" {json.dumps(name)}: {json.dumps(entry, sort_keys=True, ensure_ascii=True)}"
        for name, entry in sorted(vectors.items())
    ]
    head = f'{{"format": "pemn", "pemn.version": "{version}", "vectors": {{\n'
    path.write_text(head + ",\n".join(lines) + "\n}}\n")


def _write_set(folder: Path, valid: dict[str, bytes], invalid: dict[str, tuple[bytes, dict]], version: int) -> None:
    """``folder``/valid and ``folder``/invalid with their expected.json (stale vectors removed first)."""
    valid_dir, invalid_dir = folder / "valid", folder / "invalid"
    for sub in (valid_dir, invalid_dir):
        sub.mkdir(parents=True, exist_ok=True)
        for old in sub.iterdir():  # stale vectors of a previous version of this script
            if old.suffix in (".pemn", ".bin", ".json"):
                old.unlink()
    expected_valid = {}
    for name, blob in valid.items():
        expected_valid[f"{name}.pemn"] = describe_valid(name, blob, version)
        (valid_dir / f"{name}.pemn").write_bytes(blob)
    _dump(valid_dir / "expected.json", expected_valid, version)
    expected_invalid = {}
    for name, (blob, entry) in invalid.items():
        check_invalid(name, blob, entry)
        (invalid_dir / name).write_bytes(blob)
        expected_invalid[name] = entry
    _dump(invalid_dir / "expected.json", expected_invalid, version)


def generate(out: Path) -> dict[str, int]:
    torch.set_num_threads(1)
    blobs = {name: build_valid(name) for name in VALID}
    derived = {name: builder(blobs) for name, (_, _, _, builder) in DERIVED.items()}
    _write_set(out, {**blobs, **derived}, build_invalid(blobs), 1)
    blobs_v2 = {name: build_valid(name, version=2) for name in VALID}
    derived_v2 = {name: builder(blobs_v2, blobs) for name, (_, _, _, builder) in DERIVED_V2.items()}
    _write_set(out / "v2", {**blobs_v2, **derived_v2}, build_invalid_v2(blobs_v2, blobs), 2)
    blobs_v3 = {name: build_valid_v3(name) for name in VALID_V3}
    derived_v3 = {name: builder(blobs_v3, blobs_v2) for name, (_, _, _, builder) in DERIVED_V3.items()}
    _write_set(out / "v3", {**blobs_v3, **derived_v3}, build_invalid_v3(blobs_v3, blobs_v2), 3)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    sizes = {p.relative_to(out).as_posix(): p.stat().st_size for p in files}
    too_big = {  # expected.json is the index, not a vector: only the total bounds it
        name: size for name, size in sizes.items()
        if size >= LARGE_VECTORS.get(name, MAX_VECTOR_BYTES) and not name.endswith("expected.json")
    }
    if too_big or sum(sizes.values()) >= MAX_TOTAL_BYTES:
        raise AssertionError(f"vectors too large: {too_big}, {sum(sizes.values())} bytes in all")
    count = {kind: sum(1 for p in files if p.parent.name == kind and p.name != "expected.json")
             for kind in ("valid", "invalid")}
    return {**count, "bytes": sum(sizes.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "vectors", help="output folder (default: formats/vectors)")
    args = parser.parse_args(argv)
    counts = generate(args.out)
    print(
        f"wrote {counts['valid']} valid and {counts['invalid']} invalid vectors ({counts['bytes']} bytes) "
        f"to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
