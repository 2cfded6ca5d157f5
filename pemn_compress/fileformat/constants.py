"""Names and limits of the `.pemn` format, spelled as in formats/pemn-v1.md, pemn-v2.md and pemn-v3.md."""

from __future__ import annotations

from ..rng import GENERATOR as GENERATOR  # re-exported: the header names the generator rng implements

FORMAT_NAME = "pemn"
FORMAT_VERSION = 2  # the newest version: what writers write by default (bumped only for structural changes)
FORMAT_VERSIONS = (1, 2, 3)  # every version this package reads and can write
INT8_VERSION = 3  # the first version with int8 leftovers (formats/pemn-v3.md): written only for files that use them

# __metadata__ keys (safetensors metadata is a flat string -> string map)
KEY_FORMAT = "format"  # "pemn"
KEY_VERSION = "pemn.version"  # decimal string, "1", "2" or "3"
KEY_HEADER = "pemn.header"  # v1: the PEMN header, canonical JSON (sorted keys, no spaces)
KEY_HEADER_SHA256 = "pemn.header_sha256"  # hex SHA-256 of the UTF-8 bytes of the PEMN header text
KEY_HEADER_BYTES = "pemn.header_bytes"  # v2: decimal length of the PEMN header text once inflated

# tensor names: few tensors, so the container header stays small next to the masks
HEADER_TENSOR = "header"  # v2, uint8: the PEMN header text as one raw DEFLATE stream (RFC 1951)
MASKS_TENSOR = "masks"  # uint8: every layer's coded mask stream, concatenated in layer order
DENSE_PREFIX = "dense."  # "dense.f32" / "dense.f16" / "dense.i64": leftovers flattened and concatenated
VALUES_PREFIX = "values."  # "values.<bank>": an explicitly stored value vector (float32)
DENSE_GROUPS = {"f32": "<f4", "f16": "<f2", "i64": "<i8"}  # dense group suffix -> numpy dtype
# version 3: group q8 (int8 affine codes, float16 outliers) is stored in four tensors, not one
Q8_GROUP = "q8"
Q8_CODES, Q8_RANGE, Q8_INDEX, Q8_VALUE = "dense.q8", "dense.q8_range", "dense.q8_index", "dense.q8_value"
Q8_TENSORS = {  # tensor name -> (numpy dtype, what its length counts)
    Q8_CODES: ("u1", "codes"),  # one byte per value that is no outlier, entries in table order
    Q8_RANGE: ("<f2", "ranges"),  # two per entry: lo, step (value = lo + code * step in float32)
    Q8_INDEX: ("<u2", "outliers"),  # each outlier's position in its entry, increasing per entry
    Q8_VALUE: ("<f2", "outliers"),  # each outlier's value
}
Q8_MAX_NUMEL = 65_536  # the largest q8 entry: its outliers' positions fit 16 bits
Q8_LEVELS = 255  # codes 0..255: lo + 255 * step is the top of the grid

CODECS = ("raw", "rice")
DENSE_DTYPES = ("float32", "float16", "int8")  # int8: version 3 only
DENSE_FLOAT_GROUP = {"float32": "f32", "float16": "f16", "int8": "f16"}  # dense.dtype -> group of floats q8 cannot hold
LAYER_TYPES = ("Linear", "Conv1d", "Conv2d")  # layers[].type: the dense module types a mask replaces
LAYER_NDIM = {"Linear": 2, "Conv1d": 3, "Conv2d": 4}  # layers[].type -> the number of dimensions of its shape
ARCH_KINDS = ("registry", "import", "none")
CHECKSUM_ALGORITHM = "sha256"
HEX_DIGEST = r"[0-9a-f]{64}"  # every SHA-256 in a file: 64 lowercase hex digits (another form is a HeaderError)
IDENTITY_PREFIX = "pemn-identity"  # file identity (formats/pemn-v2.md section 3.1): SHA-256 of this, version, hashes

# safetensors dtype names <-> numpy
ST_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": None,
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}

# limits that bound what a hostile file can make a reader do
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own cap on the JSON header; v2: on the inflated PEMN header
MAX_TENSORS = 100_000
MAX_NDIM = 8
MAX_LAYER_WEIGHTS = 1 << 34  # 16 G weights in one layer: beyond any sane model
MAX_TOTAL_WEIGHTS = 1 << 36  # across all masked layers
MAX_RICE_K = 40
