"""The torch-free file core (pemn_compress.fileformat): ``encode`` / ``decode`` over the typed header,
its JSON conversion, the split between the core and the torch export, and the error classes of the
write side and of a caller's skeleton."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import edit_pemn
from torch import nn

import pemn_compress as pemn
from pemn_compress.errors import ConfigError, FormatError, HeaderError, ModelError
from pemn_compress.export import export, to_bytes
from pemn_compress.fileformat import FileHeader, LayerRecord, constants, decode, encode
from pemn_compress.fileformat.codecs import MaskCoding, decode_mask, encode_mask
from pemn_compress.fileformat.constants import KEY_HEADER
from pemn_compress.fileformat.header import canonical_json

REPO = Path(__file__).resolve().parents[2]
VALID = sorted((REPO / "formats" / "vectors" / "valid").glob("*.pemn"))
# vectors whose bytes are deliberately not the writer's form (non-canonical header text, whitespace
# around the safetensors header): readers accept them, re-encoding does not give them back
_PINNED = json.loads((REPO / "formats" / "vectors" / "valid" / "expected.json").read_text())["vectors"]
CANONICAL = [path for path in VALID if _PINNED[path.name].get("canonical", True)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _masked_mlp(**config) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    return pemn.mask_(model, pemn.MaskConfig(**config))


@pytest.mark.parametrize("path", CANONICAL, ids=lambda p: p.stem)
def test_every_valid_vector_reencodes_to_the_same_bytes(path):
    blob = path.read_bytes()
    assert encode(decode(blob), version=1) == blob


@pytest.mark.parametrize("path", CANONICAL, ids=lambda p: p.stem)
def test_header_json_round_trip_is_the_stored_text(path):
    pf = decode(path.read_bytes())
    text = pf.metadata[KEY_HEADER]
    assert canonical_json(pf.file_header.to_json()) == text
    assert FileHeader.from_json(json.loads(text)) == pf.file_header


def _inflated_header(blob: bytes) -> tuple[dict, bytes]:
    """(metadata, header text) of a version 2 file, read with the standard library only."""
    (n,) = struct.unpack("<Q", blob[:8])
    table = json.loads(blob[8 : 8 + n])
    begin, end = table["header"]["data_offsets"]
    assert table["header"]["dtype"] == "U8"
    return table["__metadata__"], zlib.decompress(blob[8 + n + begin : 8 + n + end], -15)


def test_version_2_is_the_default_and_leaves_derived_keys_out():
    model = _masked_mlp(density=0.3, strategy="mp", rescale=False)
    blob = to_bytes(model)
    metadata, text = _inflated_header(blob)
    assert metadata["pemn.version"] == "2" and "pemn.header" not in metadata
    assert int(metadata["pemn.header_bytes"]) == len(text)
    assert metadata["pemn.header_sha256"] == hashlib.sha256(text).hexdigest()
    header = json.loads(text)
    assert "banks" not in header and "generator" not in header
    for layer in header["layers"]:
        assert "bank" not in layer and "scale" not in layer  # mp without rescale: the largest layer's Kaiming scale
        assert layer["codec"] == "rice" or "bytes" not in layer
    # the version 1 file of the same model: same weights and fingerprint, every derived key written
    v1 = to_bytes(model, format_version=1)
    assert len(v1) > len(blob)
    pf1, pf2 = decode(v1), decode(blob)
    assert (pf1.format_version, pf2.format_version) == (1, 2)
    assert pf1.file_header == pf2.file_header  # the reader derives exactly what version 1 writes
    assert pf1.header["banks"] == [{"index": 0, "size": 16 * 12, "length": 16 * 12, "tiling": "none",
                                    "stored": False}]  # mp: one bank of N_max = 16 * 12 values
    largest = float(np.float32(np.sqrt(2.0 / 12)))  # Kaiming scale of the 16x12 layer, fan_in 12
    assert [layer["scale"] for layer in pf1.header["layers"]] == [largest, largest]


def test_version_2_checksum_leaves_the_header_tensor_out():
    blob = to_bytes(_masked_mlp(density=0.3))
    metadata, text = _inflated_header(blob)
    (n,) = struct.unpack("<Q", blob[:8])
    table = json.loads(blob[8 : 8 + n])
    begin, end = table["header"]["data_offsets"]
    buffer = blob[8 + n :]
    assert json.loads(text)["checksums"]["data"] == hashlib.sha256(buffer[:begin] + buffer[end:]).hexdigest()


def test_a_scale_other_than_the_rule_is_written_in_version_2():
    model = _masked_mlp(density=0.3)
    payload = export(model)
    odd = dataclasses.replace(payload.file_header.layers[1], scale=0.5)
    header = dataclasses.replace(payload.file_header, layers=(payload.file_header.layers[0], odd))
    blob = encode(dataclasses.replace(payload, file_header=header))
    layers = json.loads(_inflated_header(blob)[1])["layers"]
    assert "scale" not in layers[0] and layers[1]["scale"] == 0.5
    assert decode(blob).file_header.layers[1].scale == 0.5


def test_an_unknown_format_version_is_a_config_error():
    payload = export(_masked_mlp())
    for version in (0, 4, "2"):
        with pytest.raises(ConfigError, match="format version"):
            encode(payload, version=version)


def test_header_records_are_typed():
    pf = decode(VALID[0].read_bytes())
    header = pf.file_header
    assert isinstance(header.config, pemn.MaskConfig) and header.generator.name == constants.GENERATOR
    assert all(isinstance(layer, LayerRecord) and isinstance(layer.shape, tuple) for layer in header.layers)
    assert header.plan() == pf.plan and header.checksums is not None


def test_the_core_needs_no_torch():
    code = ("import sys; import pemn_compress.fileformat as ff; "
            "from pemn_compress.fileformat import header, payload, reader, writer, summary; "
            "assert ff.encode and ff.decode; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_export_then_encode_is_what_save_writes(tmp_path):
    model = _masked_mlp(density=0.2)
    payload = export(model, provenance={"dataset": "none"})
    assert payload.file_header.checksums is None  # encode computes it
    blob = encode(payload)
    assert blob == to_bytes(model, provenance={"dataset": "none"})
    assert pemn.save(model, tmp_path / "m.pemn", provenance={"dataset": "none"}).read_bytes() == blob
    assert decode(blob).header["provenance"] == {"dataset": "none"}


def test_save_lists_its_options_as_keyword_arguments():
    params = inspect.signature(pemn.save).parameters
    assert list(params) == ["model", "path", "dense_dtype", "fold_batchnorm", "codec", "architecture", "provenance",
                            "target_size", "format_version"]
    assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in list(params)[2:])
    assert params["dense_dtype"].default == "float16" and params["codec"].default == "auto"
    with pytest.raises(TypeError):
        pemn.save(_masked_mlp(), "unused.pemn", compression="max")


def test_files_name_the_generator_of_the_spec(reference_reader):
    """A written file names the generator the spec names (formats/pemn-v1.md section 8: the reference reader,
    written from the spec, refuses any other) and its weights regenerate, bit for bit, from it; a file naming
    another generator is refused by the package as by the reference reader."""
    from pemn_compress.fileformat.reader import decode_weights

    blob = to_bytes(_masked_mlp(density=0.5), format_version=1)
    out = reference_reader.read(blob)
    assert out["header"]["generator"]["name"] == reference_reader.GENERATOR
    weights = decode_weights(pemn.read_pemn(blob))
    assert list(weights) == list(out["weights"])
    assert all(weights[name].tobytes() == out["weights"][name].tobytes() for name in weights)
    renamed = edit_pemn(blob, header=lambda head: head["generator"].update(name="philox4x32-7"))
    with pytest.raises(reference_reader.HeaderError, match="generator.name"):
        reference_reader.read(renamed)
    with pytest.raises(HeaderError, match="generator.name"):
        pemn.read_pemn(renamed)


# ---------------------------------------------------------------------------------------------
# error classes: the caller's mistakes are not file-format errors


def test_an_unknown_write_codec_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="codec") as info:
        pemn.save(_masked_mlp(), tmp_path / "m.pemn", codec="zstd")
    assert not isinstance(info.value, FormatError) and not (tmp_path / "m.pemn").exists()
    with pytest.raises(ConfigError, match="codec"):
        encode_mask(np.ones(8, dtype=bool), "rice")


def test_an_unknown_codec_in_a_file_stays_a_header_error():
    with pytest.raises(HeaderError, match="unknown mask codec"):
        decode_mask(np.zeros(1, dtype=np.uint8), 8, MaskCoding("zstd", 0), "layer")


def test_a_skeleton_with_other_dense_shapes_is_a_model_error(tmp_path):
    path = pemn.save(_masked_mlp(), tmp_path / "m.pemn", architecture={"kind": "none"})
    skeleton = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    skeleton[0].bias = nn.Parameter(torch.zeros(17))
    with pytest.raises(ModelError, match="dense tensor '0.bias'") as info:
        pemn.load(path, device="cpu", model=skeleton)
    assert not isinstance(info.value, FormatError)


def test_a_header_without_checksums_cannot_be_serialized():
    header = dataclasses.replace(decode(VALID[0].read_bytes()).file_header, checksums=None)
    with pytest.raises(ValueError, match="checksums"):
        header.to_json()


def test_the_writer_refuses_a_header_no_reader_accepts(tmp_path):
    # an import target with a non-ASCII module name: the reader's rule (spec 11.3, dotted ASCII
    # identifiers) refuses it, so the writer must not produce it: nothing is written
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 3))
    pemn.mask_(model, pemn.MaskConfig(density=0.5))
    with pytest.raises(pemn.ConfigError, match="would not be readable.*architecture.target"):
        pemn.save(model, tmp_path / "m.pemn", architecture="modèle:build")
    assert not (tmp_path / "m.pemn").exists()
