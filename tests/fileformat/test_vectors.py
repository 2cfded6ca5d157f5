"""Test vectors of the `.pemn` format (formats/vectors/ for version 1, formats/vectors/v2/ for version 2,
formats/vectors/v3/ for version 3, made by formats/make_vectors.py). Every check runs over the three sets;
test ids are ``v1/<file>``, ``v2/<file>`` and ``v3/<file>``.

What is independent and what is not:

* the oracles: the numpy-only reference reader (formats/reference_reader.py, written from the specs
  formats/pemn-v1.md, pemn-v2.md and pemn-v3.md, sharing no code with the package) and published known
  answers (the Random123 Philox4x32-10 test vectors). Both readers must give the same float32 bits (a
  version 3 ``q8`` leftover: the float32 values it decodes to) and the same file identity on every
  valid vector and refuse every invalid vector with the error class named in invalid/expected.json. A
  reader is judged by the class only (v1 section 15): the ``message`` substring is the package's
  wording, checked for the package alone;
* the regression pins: the hashes in valid/expected.json (per-layer weight bytes, dense tensors, the
  fingerprint, the file) were produced by the package itself when the vectors were made. They prove
  nothing about correctness on their own; they catch any change of the bits a file decodes to. Never
  regenerate the vectors to make a valid-vector test pass: a changed hash means files already written
  no longer decode to the same weights.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import safetensors
import torch

import pemn_compress as pemn
from pemn_compress import errors, rng
from pemn_compress.fileformat.reader import (
    decode_masks,
    decode_weights,
    file_identity,
    read_pemn,
    verify_fingerprint,
)

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ROOT / "formats"
VECTORS = FORMATS / "vectors"
SETS = {"v1": VECTORS, "v2": VECTORS / "v2", "v3": VECTORS / "v3"}  # each: valid/ and invalid/, expected.json
VERSION = {"v1": 1, "v2": 2, "v3": 3}
LARGE_VECTORS = {"v3/invalid/q8_row_65537_values.pemn": 70_000}  # a q8 row one over the limit needs its codes
VALID_SETS = {s: json.loads((f / "valid" / "expected.json").read_text())["vectors"] for s, f in SETS.items()}
INVALID_SETS = {s: json.loads((f / "invalid" / "expected.json").read_text())["vectors"] for s, f in SETS.items()}
VALID, INVALID = VALID_SETS["v1"], INVALID_SETS["v1"]


def _cases(sets: dict[str, dict], keep=lambda name, entry: True) -> list:
    """(set, file name) of every vector of ``sets`` that ``keep`` accepts, with ids ``v1/name``."""
    return [
        pytest.param(vset, name, id=f"{vset}/{name}")
        for vset, entries in sets.items() for name, entry in sorted(entries.items()) if keep(name, entry)
    ]


VALID_CASES = _cases(VALID_SETS)
READER_INVALID = _cases(INVALID_SETS, lambda name, entry: entry["scope"] == "readers")
LOAD_INVALID = _cases(INVALID_SETS, lambda name, entry: entry["scope"] == "load")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _module("pemn_reference_reader", FORMATS / "reference_reader.py")


def _sha(data) -> str:
    return hashlib.sha256(data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()).hexdigest()


def _package_read(blob_or_path):
    pf = read_pemn(blob_or_path)
    weights = decode_weights(pf)
    verify_fingerprint(pf, weights)
    return pf, weights


@pytest.fixture(scope="module")
def make_vectors():
    return _module("pemn_make_vectors", FORMATS / "make_vectors.py")


def test_vector_sets_are_complete():
    assert {p.name for p in VECTORS.iterdir()} == {"valid", "invalid", "v2", "v3"}
    assert {p.name for p in (VECTORS / "v2").iterdir()} == {"valid", "invalid"}
    assert {p.name for p in (VECTORS / "v3").iterdir()} == {"valid", "invalid"}
    for vset, folder in SETS.items():
        valid, invalid = VALID_SETS[vset], INVALID_SETS[vset]
        assert {p.name for p in (folder / "valid").iterdir() if p.name != "expected.json"} == set(valid)
        assert {p.name for p in (folder / "invalid").iterdir() if p.name != "expected.json"} == set(invalid)
        assert {e["strategy"] for e in valid.values()} == {"dense", "onelayer", "mp", "rp"}, vset
        assert {c for e in valid.values() for c in e["codecs"]} == {"raw", "rice"}, vset
        assert {e["distribution"] for e in valid.values()} == {"normal", "uniform", "signed_constant"}, vset
        for kind in ("valid", "invalid"):
            header = json.loads((folder / kind / "expected.json").read_text())
            assert header["format"] == "pemn" and header["pemn.version"] == str(VERSION[vset])
    for vset in SETS:  # versions 2 and 3 are no longer newer than what readers implement (v3 section 7)
        assert INVALID_SETS[vset]["version_4.pemn"]["error"] == "VersionError", vset
        assert not {"version_2.pemn", "version_3.pemn"} & set(INVALID_SETS[vset]), vset
    files = [p for p in VECTORS.rglob("*") if p.is_file()]
    for p in files:
        if p.name != "expected.json":
            assert p.stat().st_size < LARGE_VECTORS.get(p.relative_to(VECTORS).as_posix(), 50_000), p
    assert sum(p.stat().st_size for p in files) < 1_000_000


def test_v3_sets_cover_section_7():
    """formats/pemn-v3.md section 7: int8 writer files with outliers and with every group, the "accept" edits,
    and an invalid vector for each rule of sections 2 to 4."""
    valid, invalid = VALID_SETS["v3"], INVALID_SETS["v3"]
    assert {name for name, e in valid.items() if "canonical" not in e} == set(valid)  # all the writer's bytes
    groups = {}
    for name in valid:
        dense = ref.read(SETS["v3"] / "valid" / name)["stored_header"]["dense"]
        groups[name] = {row[2] for row in dense["tensors"]}
        assert (dense["dtype"] == "int8") == (name != "seq_v3_without_q8_rows.pemn"), name
    assert groups["int8_mixed_groups.pemn"] == {"q8", "f16", "f32", "i64"}
    assert groups["seq_v3_without_q8_rows.pemn"] == groups["seq_onelayer_int8_no_q8.pemn"] == {"f16"}
    assert {"cm_int8_every_value_an_outlier.pemn", "cm_int8_step_zero.pemn"} <= set(valid)
    for key, pinned in valid["cm_mp_folded_int8_outliers.pemn"]["dense"].items():
        assert pinned["dtype"] == "float32", key  # a q8 leftover is pinned by the float32 values it decodes to
    errors_by_name = {name: e["error"] for name, e in invalid.items()}
    for tensor in ("q8", "q8_range", "q8_index", "q8_value"):
        assert errors_by_name[f"{tensor}_missing.pemn"] == "ShapeError"
        assert sum(1 for n in invalid if n.startswith(f"{tensor}_")) >= 3, tensor  # missing, dtype, length
    for name in ("q8_in_float16_file", "int8_in_version_2", "q8_row_three_elements", "q8_row_five_elements",
                 "q8_outliers_above_n", "q8_outliers_boolean", "q8_row_65537_values", "q8_tensors_without_q8_rows"):
        assert errors_by_name[f"{name}.pemn"] == "HeaderError", name
    for name in ("q8_lo_nan", "q8_step_inf", "q8_positions_decreasing", "q8_positions_repeated", "q8_position_at_n",
                 "q8_index_empty_missing"):
        assert errors_by_name[f"{name}.pemn"] == "ShapeError", name


# ----------------------------------------------------------------------------------- valid vectors
@pytest.mark.parametrize("vset,name", VALID_CASES)
def test_valid_vector_both_readers_bit_identical(vset, name):
    path, expected = SETS[vset] / "valid" / name, VALID_SETS[vset][name]
    assert _sha(path.read_bytes()) == expected["file_sha256"], "the committed vector changed: regenerate or restore it"
    pf, weights = _package_read(path)
    masks = decode_masks(pf)
    out = ref.read(path)
    assert list(weights) == list(out["weights"]) == [layer["name"] for layer in expected["layers"]]  # layer order
    for pinned in expected["layers"]:
        layer = pinned["name"]
        a, b = weights[layer], out["weights"][layer]
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == tuple(pinned["shape"])
        assert a.tobytes() == b.tobytes(), f"{layer}: the readers disagree"  # bits: -0.0 included
        assert _sha(a) == pinned["sha256"], f"{layer}: the readers agree with each other, not with the pinned hash"
        assert np.array_equal(masks[layer], out["masks"][layer]) and int(masks[layer].sum()) == pinned["kept"]
    dense = pf.dense_arrays()
    assert list(dense) == list(out["dense"]) and set(dense) == set(expected["dense"])
    for key, pinned in expected["dense"].items():
        assert str(dense[key].dtype) == str(out["dense"][key].dtype) == pinned["dtype"]
        assert list(out["dense"][key].shape) == pinned["shape"]
        assert _sha(dense[key]) == _sha(out["dense"][key]) == pinned["sha256"]
    assert out["version"] == pf.format_version == VERSION[vset]
    assert file_identity(pf) == ref.file_identity(out) == expected["identity"]
    assert out["stored_header"] == pf.header and pf.header["fingerprint"]["value"] == expected["fingerprint"]
    if vset == "v1":  # nothing to derive: the completed header is the stored one
        assert out["header"] == pf.header
    # the header the reference reader completes (version 2: derived keys) is the one the package decodes with
    completed = out["header"]
    assert completed["generator"] == {"name": pf.file_header.generator.name, "seed": pf.file_header.generator.seed}
    assert [(b["index"], b["size"], b["length"], b["tiling"], b["stored"]) for b in completed["banks"]] == [
        (b.index, b.size, b.length, b.tiling, b.stored) for b in pf.file_header.banks
    ]
    assert [(layer["bank"], layer["scale"], layer["bytes"]) for layer in completed["layers"]] == [
        (layer.bank, layer.scale, layer.bytes) for layer in pf.file_header.layers
    ]
    for bank in pf.file_header.banks:
        if bank.stored:
            assert out["values"][bank.index].tobytes() == pf.tensors[f"values.{bank.index}"].tobytes()


@pytest.mark.parametrize("vset,name", VALID_CASES)
def test_valid_vector_loads_as_a_module(vset, name, make_vectors):
    path, expected = SETS[vset] / "valid" / name, VALID_SETS[vset][name]
    if "registry" in expected["load"]:
        model = pemn.load(path, device="cpu")
    else:
        model = pemn.load(path, device="cpu", model=make_vectors.SKELETONS[expected["load"]["skeleton"]]())
    assert not model.training
    for pinned in expected["layers"]:
        weight = model.get_submodule(pinned["name"]).weight.detach()
        assert weight.dtype == torch.float32 and _sha(weight.numpy()) == pinned["sha256"]
    state = model.state_dict()
    reference = ref.read(path)["dense"]
    for key, array in reference.items():  # by bits: leftovers may hold NaN (seq_dense_leftovers_nonfinite)
        assert state[key].numpy().tobytes() == array.astype(state[key].numpy().dtype).tobytes(), key
    header = model.pemn_file_header
    for bn in header["dense"]["folded_batchnorm"]:  # x * scale + shift exactly: stats (0, 1), eps 0
        module = model.get_submodule(bn)
        assert module.eps == 0.0 and not module.running_mean.any() and bool((module.running_var == 1).all())


@pytest.mark.parametrize("vset,name", VALID_CASES)
def test_valid_vector_opens_with_safetensors(vset, name):
    path = SETS[vset] / "valid" / name
    pf = read_pemn(path)
    with safetensors.safe_open(str(path), "np") as fh:
        assert fh.metadata() == pf.metadata
        assert set(fh.keys()) == set(pf.tensors)
        for key in fh.keys():
            array = fh.get_tensor(key)
            assert array.dtype == pf.tensors[key].dtype and array.tobytes() == pf.tensors[key].tobytes()


@pytest.mark.parametrize("name", sorted(set(VALID_SETS["v1"]) & set(VALID_SETS["v2"])))
def test_v2_vector_is_its_v1_vector_with_a_compact_header(name):
    """The same model and options in both versions (formats/pemn-v2.md section 7): the version 2 header,
    completed, is the version 1 header (checksums.data and fingerprint included), the tensors but
    ``header`` are the same bytes, and the weights the same bits."""
    one, two = ref.read(VECTORS / "valid" / name), ref.read(SETS["v2"] / "valid" / name)
    assert two["header"] == one["header"] and two["stored_header"] != one["stored_header"]
    assert VALID_SETS["v2"][name]["layers"] == VALID_SETS["v1"][name]["layers"]
    assert VALID_SETS["v2"][name]["dense"] == VALID_SETS["v1"][name]["dense"]
    v1_tensors, v2_tensors = read_pemn(VECTORS / "valid" / name).tensors, read_pemn(SETS["v2"] / "valid" / name).tensors
    assert set(v2_tensors) == set(v1_tensors) | {"header"}
    for key, array in v1_tensors.items():
        assert array.dtype == v2_tensors[key].dtype and array.tobytes() == v2_tensors[key].tobytes(), key


@pytest.mark.parametrize("vset,name", _cases({s: VALID_SETS[s] for s in ("v2", "v3")},
                                            lambda name, entry: entry.get("canonical", True)))
def test_v2_writer_leaves_the_derived_keys_out(vset, name):
    """What a version 2 (and 3) writer leaves out is fixed (v2 section 4): generator, banks, every layer's
    bank, a raw layer's bytes, and a scale equal to the rule's (the reference reader's own derivation)."""
    out = ref.read(SETS[vset] / "valid" / name)
    stored, metadata = out["stored_header"], out["metadata"]
    assert "generator" not in stored and "banks" not in stored and "pemn.header" not in metadata
    config = out["header"]["config"]
    rule = ref.derived_scales(config, [tuple(layer["shape"]) for layer in stored["layers"]])
    for layer, scale in zip(stored["layers"], rule, strict=True):
        assert "bank" not in layer
        assert ("bytes" in layer) == (layer["codec"] == "rice"), layer["name"]
        assert ("scale" in layer) == (np.float32(layer.get("scale", scale)) != np.float32(scale)), layer["name"]
    written = [layer["name"] for layer in stored["layers"] if "scale" in layer]
    assert written == (["0"] if name == "seq_mp_paper_scale_not_derived.pemn" else [])


@pytest.mark.parametrize("name", sorted(n for n, e in VALID_SETS["v3"].items() if n != "seq_v3_without_q8_rows.pemn"))
def test_v3_writer_writes_version_3_exactly_for_int8(name):
    """formats/pemn-v3.md section 5: an int8 file is written as version 3 whatever version 2 (the default)
    it is asked for, and version 1 is refused; the same content in float16 is written as version 2."""
    from pemn_compress.errors import ConfigError
    from pemn_compress.fileformat.payload import Payload
    from pemn_compress.fileformat.writer import encode

    blob = (SETS["v3"] / "valid" / name).read_bytes()
    pf = read_pemn(blob)
    payload = Payload(pf.file_header, {key: t for key, t in pf.tensors.items() if key != "header"})
    assert pf.file_header.dense.dtype == "int8"
    assert encode(payload, version=2) == encode(payload, version=3) == blob
    with pytest.raises(ConfigError, match="version 1"):
        encode(payload, version=1)


def test_valid_headers_match_the_json_schema():
    """Every valid vector's header passes the schema, and each single edit fails it at the edited
    place for the edited reason (not for some other problem the edit happens to cause).

    The schema describes the complete header: a version 2 header is checked once completed with its
    derived keys (by the reference reader, formats/pemn-v2.md section 4); as stored it lacks exactly
    the required keys ``generator`` and ``banks`` (and, in layers, what the schema requires there)."""
    import jsonschema  # in the test extra: a missing install fails here rather than skipping

    schema = json.loads((FORMATS / "pemn-header.schema.json").read_text())
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator  # its $schema
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in sorted(VALID):
        header = read_pemn(VECTORS / "valid" / name).header
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(header)]
        assert not problems, f"{name}: {problems}"
    for vset in ("v2", "v3"):
        for name in sorted(VALID_SETS[vset]):
            header = ref.read(SETS[vset] / "valid" / name)["header"]
            problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(header)]
            assert not problems, f"{vset}/{name}: {problems}"
    header = read_pemn(VECTORS / "valid" / "seq_onelayer_rice_d10.pemn").header
    assert not list(validator.iter_errors(header))
    for edit, path, keyword in (  # the edit, where the schema must object, with which keyword
        (lambda h: h.pop("fingerprint"), [], "required"),
        (lambda h: h["layers"][0].update(codec="zstd"), ["layers", 0, "codec"], "enum"),
        (lambda h: h["layers"][0].pop("invert"), ["layers", 0], "required"),
        (lambda h: h["config"].update(prune_rate=0.5), ["config"], "additionalProperties"),
        (lambda h: h["checksums"].update(data="xyz"), ["checksums", "data"], "pattern"),
        (lambda h: h["architecture"].update(kind="import"), ["architecture"], "oneOf"),  # import needs a target
        (lambda h: h["layers"][2].update(shape=[3, 64, 1, 1]), ["layers", 2, "shape"], "maxItems"),  # a 4-D Linear
        (lambda h: h.update(provenance=None), ["provenance"], "type"),
        (lambda h: h["fingerprint"].update(value=h["fingerprint"]["value"].upper()), ["fingerprint", "value"],
         "pattern"),
    ):
        bad = json.loads(json.dumps(header))
        edit(bad)
        found = [(list(e.absolute_path), e.validator) for e in validator.iter_errors(bad)]
        assert found == [(path, keyword)], found


# ----------------------------------------------------------------------------------- invalid vectors
@pytest.mark.parametrize("vset,name", READER_INVALID)
def test_invalid_vector_package_refuses(vset, name):
    expected = INVALID_SETS[vset][name]
    with pytest.raises(errors.FormatError) as info:
        _package_read(SETS[vset] / "invalid" / name)
    assert type(info.value).__name__ == expected["error"], info.value
    assert expected["message"] in str(info.value)


@pytest.mark.parametrize("vset,name", READER_INVALID)
def test_invalid_vector_reference_refuses(vset, name):
    """An independent reader is judged by the error class alone: its messages are its own (v1 section 15)."""
    expected = INVALID_SETS[vset][name]
    with pytest.raises(ref.FormatError) as info:
        ref.read(SETS[vset] / "invalid" / name)
    assert type(info.value).__name__ == expected["error"], info.value


@pytest.mark.parametrize("vset,name", _cases(INVALID_SETS, lambda name, entry: entry.get("safetensors_rejects")))
def test_invalid_container_is_refused_by_safetensors_too(vset, name):
    with pytest.raises(safetensors.SafetensorError):
        with safetensors.safe_open(str(SETS[vset] / "invalid" / name), "np") as fh:
            for key in fh.keys():
                fh.get_tensor(key)


@pytest.mark.parametrize("vset,name", LOAD_INVALID)
def test_import_architecture_needs_trust_and_never_runs(vset, name, monkeypatch):
    path, expected = SETS[vset] / "invalid" / name, INVALID_SETS[vset][name]
    calls = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(("os.system", a, k)) or 0)
    import importlib

    real_import = importlib.import_module  # the one function every import of user code goes through
    monkeypatch.setattr(importlib, "import_module", lambda *a, **k: calls.append(("import", a)) or real_import(*a, **k))
    with pytest.raises(getattr(errors, expected["error"]), match=expected["message"]):
        pemn.load(path, device="cpu")
    assert calls == []
    _package_read(path)  # for a reader that builds no architecture the file is valid data
    assert ref.read(path)["header"]["architecture"]["target"] == "os:system"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_registry_kwargs_cannot_force_a_huge_allocation(make_vectors):
    import resource

    edit = make_vectors.Edit((VECTORS / "valid" / "cm_onelayer_d50.pemn").read_bytes())
    edit.header["architecture"]["kwargs"]["dim"] = 20_000  # a 1x1 conv of 4e8 weights: 1.6 GB; the header says 256
    blob = edit.pack()
    with open("/proc/self/status") as fh:
        size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize"))
    old = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), old[1]))  # a failed allocation, not a swap storm
    try:
        # refused before building anything of that size: the file's stem has 16 output channels, the
        # kwargs ask for 20,000 (allocating first ends in the allocator's RuntimeError instead)
        with pytest.raises(errors.ShapeError, match=r"layer 'stem.0': file shape \[16, 1, 4, 4\], model shape \[20000"):
            pemn.load(blob, device="cpu")
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


HOSTILE_SIZES = _cases(  # a few bytes that declare or inflate to many: refused before allocating
    INVALID_SETS,
    lambda n, e: e["error"] == "LimitError" or n in ("rice_huge_ones.pemn", "header_inflation_bomb.pemn"),
)


@pytest.mark.parametrize("vset,name", HOSTILE_SIZES)
def test_hostile_sizes_are_refused_before_allocating(vset, name):
    blob = (SETS[vset] / "invalid" / name).read_bytes()
    for reader in (_package_read, ref.read):
        tracemalloc.start()
        try:
            with pytest.raises((errors.FormatError, ref.FormatError)) as info:
                reader(blob)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert type(info.value).__name__ == INVALID_SETS[vset][name]["error"]
        assert peak < 16 * len(blob) + (8 << 20), f"{reader.__name__}: {peak} bytes for a {len(blob)}-byte file"


def test_error_classes_mirror_the_package():
    for name in ("ContainerError", "HeaderError", "MissingKeyError", "VersionError", "ChecksumError", "LimitError",
                 "ShapeError"):
        ours, theirs = getattr(ref, name), getattr(errors, name)
        assert issubclass(ours, ref.FormatError) and issubclass(ours, ValueError)
        parents = {c.__name__ for c in theirs.__mro__ if issubclass(c, errors.FormatError)}
        assert {c.__name__ for c in ours.__mro__ if issubclass(c, ref.FormatError)} == parents


# ----------------------------------------------------------------------------------- the reference reader itself
def test_reference_reader_imports_only_numpy_and_the_standard_library():
    tree = ast.parse((FORMATS / "reference_reader.py").read_text())
    nodes = list(ast.walk(tree))
    imported = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "hashlib", "json", "math", "os", "re", "sys", "zlib", "numpy"}, imported


def test_reference_reader_cli_runs_without_torch_or_the_package():
    """Poison torch and pemn_compress, run the CLI on every vector, check nothing else got imported."""
    pinned_by_path = {
        str(SETS[vset] / "valid" / n): e for vset, entries in VALID_SETS.items() for n, e in entries.items()
    }
    valid = sorted(pinned_by_path)
    bad = str(VECTORS / "invalid" / "version_4.pemn")
    code = (
        "import sys, runpy, json\n"
        "for m in ('torch', 'pemn_compress', 'safetensors'): sys.modules[m] = None\n"
        f"sys.argv = ['reference_reader.py'] + {valid!r}\n"
        "try:\n"
        f"    runpy.run_path({str(FORMATS / 'reference_reader.py')!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "loaded = [m for m, v in sys.modules.items()\n"
        "          if v is not None and m.split('.')[0] in ('torch', 'pemn_compress')]\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=FORMATS,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    summaries = json.loads(done.stdout)
    assert sorted(summaries) == valid
    for path, summary in summaries.items():
        pinned = pinned_by_path[path]["layers"]
        found = [(layer["name"], layer["sha256"]) for layer in summary["layers"]]
        assert found == [(p["name"], p["sha256"]) for p in pinned]
    done = subprocess.run([sys.executable, str(FORMATS / "reference_reader.py"), bad], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 1 and json.loads(done.stdout)[bad]["error"] == "VersionError"


KATS = [  # Random123 kat_vectors, philox4x32_10: counter words, key words, output words
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KATS)
def test_reference_philox_known_answers(counter, key, expected):
    assert tuple(int(w) for w in ref.philox4x32_10(counter, key)) == expected


@pytest.mark.parametrize("distribution", rng.DISTRIBUTIONS)
def test_reference_generator_matches_the_package(distribution):
    seed, stream = 2**63 - 12345, 2**32 + 7  # high key and counter words in use
    ours = ref.unit_values(seed, stream, 300_001, distribution)  # crosses the reference reader's chunk size
    assert ours.tobytes() == rng.unit_values(seed, stream, 300_001, distribution).tobytes()
    assert np.array_equal(ref._permutation(seed, stream, 5000), rng.permutation(seed, stream, 5000))


# ----------------------------------------------------------------------------------- determinism
@pytest.mark.slow
def test_make_vectors_regenerates_identical_bytes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(FORMATS / "make_vectors.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in VECTORS.iterdir()}
    for folder in ("valid", "invalid", "v2/valid", "v2/invalid", "v3/valid", "v3/invalid"):
        fresh = {p.name: p.read_bytes() for p in (tmp_path / folder).iterdir()}
        committed = {p.name: p.read_bytes() for p in (VECTORS / folder).iterdir()}
        assert sorted(fresh) == sorted(committed)
        changed = sorted(name for name in fresh if fresh[name] != committed[name])
        assert not changed, f"make_vectors.py no longer reproduces {changed} (writer or generator changed?)"
