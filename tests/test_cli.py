"""The ``pemn`` command line (pemn_compress.cli) and the size accounting it renders
(pemn_compress.fileformat.summary): inspect / verify on real files, exact dense-fp32 sizes, exit
codes and one-line errors, hostile strings kept off the terminal, and no torch import."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import edit_pemn
from safetensors.numpy import save_file
from torch import nn

import pemn_compress as pemn
from pemn_compress import cli as cli_module
from pemn_compress.cli import cli, sanitize
from pemn_compress.fileformat.reader import read_pemn
from pemn_compress.fileformat.summary import safetensors_file_size, summarize
from pemn_compress.surgery import materialize

REPO = Path(__file__).resolve().parents[1]

STRATEGIES = {
    "dense": pemn.MaskConfig(strategy="dense"),
    "onelayer": pemn.MaskConfig(strategy="onelayer"),
    "mp": pemn.MaskConfig(strategy="mp"),
    "rp_copy": pemn.MaskConfig(strategy="rp", ratio=1e-3),
    "rp_rand": pemn.MaskConfig(strategy="rp", ratio=1e-3, rp_mode="rand", density=0.2),
}
PROVENANCE = {"dataset": "fashion-mnist", "accuracy": 0.9012, "recipe": {"epochs": 3, "lr": 0.01}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """strategy -> (path, masked model). test_convmixer at dim 64: big enough that the file beats fp32."""
    folder = tmp_path_factory.mktemp("cli")
    out = {}
    for name, config in STRATEGIES.items():
        model = pemn.create_model("test_convmixer", dim=64)
        pemn.mask_(model, config)
        path = folder / f"{name}.pemn"
        pemn.save(model, path, provenance=PROVENANCE)
        out[name] = (path, model.eval())
    return out


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def assert_one_line_error(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return lines[0]


def rewrite(src: Path, dst: Path, *, tensors=None, header=None, metadata=None, resign: bool = True) -> Path:
    """Copy a .pemn file with its tensors / header / metadata changed; re-sign header and checksums."""
    dst.write_bytes(edit_pemn(src.read_bytes(), tensors=tensors, header=header, metadata=metadata, resign=resign))
    return dst


def safetensors_layout(path: Path) -> tuple[int, dict[str, tuple[int, int]]]:
    """(bytes before the data, {tensor: (first byte, end byte)} in the data) read straight from the
    file as the safetensors format defines it: an 8-byte little-endian header length, the JSON
    header, then the data, each tensor at its ``data_offsets``. Independent of the package's reader."""
    blob = path.read_bytes()
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + length])
    spans = {name: tuple(entry["data_offsets"]) for name, entry in header.items() if name != "__metadata__"}
    return 8 + length, spans


def span_bytes(spans: dict[str, tuple[int, int]], prefix: str) -> int:
    return sum(end - begin for name, (begin, end) in spans.items() if name.startswith(prefix))


def real_dense_fp32_size(model: nn.Module, folder: Path) -> int:
    """Write the materialized model (what pemn.load returns) with safetensors itself; measure the file."""
    dense = materialize(copy.deepcopy(model))
    state = {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
             for k, v in dense.state_dict().items()}
    path = folder / "dense_fp32.safetensors"
    save_file(state, str(path))
    return os.path.getsize(path)


# ---------------------------------------------------------------------------------------------
# help


def test_help_lists_commands_and_is_torch_free():
    for args in ([], ["--help"], ["inspect", "--help"], ["verify", "--help"], ["--version"]):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    assert "inspect" in invoke("--help").output and "verify" in invoke("--help").output
    assert "--json" in invoke("inspect", "--help").output
    assert pemn.__version__ in invoke("--version").output


def test_lazy_command_extension_point(monkeypatch):
    monkeypatch.setitem(cli_module.LAZY_COMMANDS, "hello", f"{__name__}:_hello_command")
    assert "hello" in invoke("--help").output
    result = invoke("hello")
    assert result.exit_code == 0 and "hi from a lazy command" in result.stdout
    result = invoke("hello", "--fail")  # a PemnError from a new command gets the same one-line handling
    assert "bad input from hello" in assert_one_line_error(result, 2)


import click  # noqa: E402  (only for the extension-point command below)


@click.command("hello")
@click.option("--fail", is_flag=True)
def _hello_command(fail: bool) -> None:
    if fail:
        raise pemn.ConfigError("bad input from hello")
    click.echo("hi from a lazy command")


# ---------------------------------------------------------------------------------------------
# inspect


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_inspect_shows_every_layer_and_the_numbers(files, strategy):
    path, model = files[strategy]
    plan = model.pemn_plan
    result = invoke("inspect", path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for source in plan.layers:
        assert source.name in out
    assert "paper formula (BN not counted)" in out
    assert "on-disk ratio" in out and "dense fp32 safetensors" in out
    assert "information bound" in out and "(fp16, BN folded)" in out
    assert f"{os.path.getsize(path):,} B" in out
    assert "fashion-mnist" in out and "0.9012" in out and "epochs" in out
    assert "test_convmixer" in out and "philox4x32-10" in out
    if strategy.startswith("rp"):
        mode = STRATEGIES[strategy].rp_mode
        assert f"bank 0 ({plan.unique_values:,} values, {mode})" in out
    if strategy == "dense":
        assert "own values" in out
    if strategy == "onelayer":
        assert "shared shape" in out  # the two depthwise convs (and the two pointwise) share a prototype


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_inspect_json_totals_agree_with_disk_and_the_reference_reader(files, strategy, tmp_path, reference_reader):
    """Every number of ``inspect --json`` against a source that is not the package's summary: the file
    on disk, its safetensors layout parsed here, the reference reader, and safetensors itself."""
    path, model = files[strategy]
    result = invoke("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)  # one document, nothing else on stdout
    t = s["totals"]
    # sizes: the file on disk and the byte ranges of its tensors
    prefix_bytes, spans = safetensors_layout(path)
    assert t["file_bytes"] == os.path.getsize(path) == prefix_bytes + max(end for _, end in spans.values())
    assert t["header_bytes"] == prefix_bytes + span_bytes(spans, "header") > prefix_bytes  # v2: the deflated header
    assert t["mask_bytes"] == span_bytes(spans, "masks") > 0
    assert t["dense_bytes"] == span_bytes(spans, "dense.") > 0
    assert t["values_bytes"] == span_bytes(spans, "values.")
    assert t["dense_fp32_bytes"] == real_dense_fp32_size(model, tmp_path)  # exact, not an estimate
    # content: the reference reader's decoding and its own bank rules
    ref = reference_reader.read(path)
    header = ref["header"]
    banks, _ = reference_reader.expected_banks(header["config"], [tuple(layer["shape"]) for layer in header["layers"]])
    assert t["unique_values"] == sum(bank["size"] for bank in banks)
    assert t["masked_weights"] == sum(weight.size for weight in ref["weights"].values())
    assert [row["name"] for row in s["layers"]] == list(ref["masks"]) == [name for name, _ in pemn.masked_layers(model)]
    offset = 0
    for row, layer in zip(s["layers"], header["layers"], strict=True):
        mask = ref["masks"][row["name"]]
        assert row["weights"] == mask.size and row["shape"] == list(mask.shape)
        assert row["kept"] == int(mask.sum()) == int(dict(pemn.masked_layers(model))[row["name"]].mask().sum())
        assert row["mask_bytes"] == layer["bytes"]
        if layer["codec"] == "raw":  # the spec fixes a raw mask's length: ceil(n / 8)
            assert row["mask_bytes"] == -(-mask.size // 8)
        offset += row["mask_bytes"]
    assert offset == t["mask_bytes"]  # the layers' streams tile the masks tensor
    # what must hold whatever the formulas (their values are checked by hand on a tiny file below)
    assert t["disk_ratio"] > 1 and (t["paper_ratio"] > 1 or strategy == "dense")  # dense: 32 / 33
    assert t["mask_bytes"] >= t["mask_information_bytes"]  # no coder beats the entropy of these masks
    assert s["config"]["strategy"] == STRATEGIES[strategy].strategy and s["format_version"] == 2
    assert s["provenance"] == PROVENANCE


def tiny_file(folder: Path) -> tuple[Path, nn.Module]:
    """Two linear layers with hand-set masks, small enough to compute every size by hand.

    Layer "0": 4x8 = 32 weights, kept 0..6 and 31 (8 = 0.25 x 32); layer "1": 2x4 = 8 weights,
    kept 0 and 5 (2 = 0.25 x 8); "1.bias" (2 floats) is the only dense leftover, stored float32.
    """
    model = nn.Sequential(nn.Linear(8, 4, bias=False), nn.Linear(4, 2))
    pemn.mask_(model, pemn.MaskConfig(strategy="mp", density=0.25, seed=3))
    with torch.no_grad():
        for layer, kept in ((model[0], [*range(7), 31]), (model[1], [0, 5])):
            scores = layer.get_parameter("scores")  # the mask keeps the largest |scores|
            hand = torch.full((scores.numel(),), 0.1)
            hand[kept] = 1.0
            scores.copy_(hand.reshape(scores.shape))
    path = pemn.save(model, folder / "tiny.pemn", dense_dtype="float32")
    return Path(path), model


def test_summary_numbers_of_a_tiny_file_by_hand(tmp_path):
    path, model = tiny_file(tmp_path)
    s = summarize(read_pemn(path), path)
    t = s["totals"]
    # masks: raw for both layers (spec 7.3: rice only when strictly smaller; the best rice code of
    # layer 0, gaps 0,0,0,0,0,0,0,24, is 28 bits at k = 1: 4 bytes, as many as raw). Raw: ceil(n / 8).
    assert [(row["codec"], row["mask_bytes"], row["kept"]) for row in s["layers"]] == [("raw", 4, 8), ("raw", 1, 2)]
    assert [row["mask_bits_per_weight"] for row in s["layers"]] == [1.0, 1.0]  # 8 x 4 / 32, 8 x 1 / 8
    assert [row["density_kept"] for row in s["layers"]] == [0.25, 0.25]
    assert (t["mask_bytes"], t["dense_bytes"], t["values_bytes"]) == (5, 8, 0)  # 4 + 1; 2 float32; mp stores none
    assert t["file_bytes"] - t["header_bytes"] == 13  # the data buffer: 5 + 8
    assert t["masked_weights"] == 40 and t["unique_values"] == 32  # 32 + 8; mp: one bank of N_max = 32 values
    assert t["paper_bits"] == 1064  # 40 masked weights x 1 bit + 32 values x 32 bits
    assert t["paper_ratio"] == pytest.approx(1280 / 1064)  # 40 weights x 32 bits / 1064 bits = 1.2030
    # H(0.25) = 0.25 x 2 + 0.75 x log2(4/3) = 0.5 + 0.311278 = 0.811278 bits per weight, 40 weights
    assert t["mask_information_bits"] == pytest.approx(40 * 0.8112781244591328)  # 32.4511 bits
    assert t["mask_information_bytes"] == pytest.approx(4.0563906)
    assert t["mask_overhead_bytes"] == pytest.approx(5 - 4.0563906)
    assert t["dense_bound_bytes"] == 4  # "1.bias": 2 values at 2 bytes (fp16), though stored float32 (8 bytes)
    assert t["bound_bytes"] == pytest.approx(4.0563906 + 4)  # information bound of the masks + the dense bound
    assert t["file_overhead_bytes"] == pytest.approx(t["file_bytes"] - 8.0563906)
    # the fp32 model: 0.weight 128 B, 1.bias 8 B, 1.weight 32 B of data (168), after this JSON header
    # (193 bytes, padded with spaces to 200, a multiple of 8) and its 8-byte length: 8 + 200 + 168 = 376
    json_header = ('{"0.weight":{"dtype":"F32","shape":[4,8],"data_offsets":[0,128]},'
                   '"1.bias":{"dtype":"F32","shape":[2],"data_offsets":[128,136]},'
                   '"1.weight":{"dtype":"F32","shape":[2,4],"data_offsets":[136,168]}}')
    assert len(json_header) == 193
    assert t["dense_fp32_bytes"] == 376 == real_dense_fp32_size(model, tmp_path)
    assert t["disk_ratio"] == pytest.approx(376 / os.path.getsize(path))


@pytest.mark.parametrize("strategy", ["onelayer", "rp_rand"])
def test_inspect_fits_80_columns_and_keeps_every_number(files, strategy):
    path, _ = files[strategy]
    s = json.loads(invoke("inspect", path, "--json", env={"COLUMNS": "80"}).stdout)
    assert invoke("inspect", path, "--json", env={"COLUMNS": "80"}).stdout == invoke("inspect", path, "--json").stdout
    t = s["totals"]
    result = invoke("inspect", path, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    out, lines = result.stdout, result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    # the size section: every number the wide table shows, from the same --json document
    for number in (t["file_bytes"], t["mask_bytes"], t["dense_bytes"], t["header_bytes"], t["dense_fp32_bytes"]):
        assert f"{number:,} B" in out, number
    assert f"{t['disk_ratio']:,.2f}x" in out and f"{t['paper_ratio']:,.2f}x" in out
    assert f"32 x {t['masked_weights']:,} / ({t['masked_weights']:,} + 32 x {t['unique_values']:,}) bits" in out
    assert f"{t['mask_bits_per_weight']:.3f} bits/weight; bound {t['mask_information_bytes']:,.0f} B" in out
    assert f"(fp16, BN folded) {t['dense_bound_bytes']:,} B" in out
    assert "paper formula (BN not counted)" in out and "on-disk ratio" in out and "information bound" in out
    # each layer's numbers on one line (no cell folded over several lines)
    for layer in s["layers"]:
        numbers = [f"{layer['weights']:,}", f"{layer['mask_bits_per_weight']:.3f}", f"{layer['mask_bytes']:,}",
                   f"{layer['kept']:,}", f"{100 * layer['density_kept']:.1f}%"]
        assert any(line.split()[:1] == [layer["name"]] and all(n in line for n in numbers) for line in lines), layer
        what = ["x".join(map(str, layer["shape"])), layer["value_source"], layer["type"]]
        assert any(line.split()[:1] == [layer["name"]] and all(w in line for w in what) for line in lines), layer
    # a wide console keeps the one-table layout: kept/weights (fraction) in a single row
    wide = invoke("inspect", path, env={"COLUMNS": "160"}).stdout
    layer = s["layers"][0]
    assert f"{layer['kept']:,}/{layer['weights']:,} ({layer['density_kept']:.3f})" in wide
    assert max(len(line) for line in wide.splitlines()) <= 160


def test_dense_fp32_size_matches_safetensors_for_any_dtypes_and_names(tmp_path):
    tensors = {
        "w": np.zeros((3, 5), np.float32), "n": np.zeros((), np.int64), "h": np.zeros(7, np.float16),
        "d": np.zeros(2, np.float64), "u8": np.zeros(9, np.uint8), "i32": np.zeros(3, np.int32),
        "u16": np.zeros(1, np.uint16), "i16": np.zeros(1, np.int16), "b": np.zeros(5, np.bool_),
        "u64": np.zeros(2, np.uint64), "i8": np.zeros(3, np.int8), "u32": np.zeros(1, np.uint32),
        "caf\u00e9.\u6f22\u5b57": np.zeros(1, np.float32), "esc\x1b[31m\"q\"\\": np.zeros(2, np.float32),
        "x" * 300: np.zeros((10, 10, 10), np.float32),
    }
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float16): "F16",
             np.dtype(np.float64): "F64", np.dtype(np.uint8): "U8", np.dtype(np.int32): "I32",
             np.dtype(np.uint16): "U16", np.dtype(np.int16): "I16", np.dtype(np.bool_): "BOOL",
             np.dtype(np.uint64): "U64", np.dtype(np.int8): "I8", np.dtype(np.uint32): "U32"}
    for k in range(1, len(tensors) + 1):  # growing subsets move the offsets across digit boundaries
        subset = dict(list(tensors.items())[:k])
        save_file(subset, str(tmp_path / "t.safetensors"))
        entries = {n: (names[a.dtype], list(a.shape)) for n, a in subset.items()}
        assert safetensors_file_size(entries) == os.path.getsize(tmp_path / "t.safetensors"), list(subset)


@pytest.mark.parametrize("options", [dict(dense_dtype="float16"), dict(dense_dtype="float32", fold_batchnorm=True),
                                     dict(dense_dtype="float16", fold_batchnorm=True),
                                     dict(dense_dtype="int8", fold_batchnorm=True)])
def test_dense_equivalent_is_the_loaded_model_in_fp32_whatever_the_storage(files, tmp_path, options):
    _, model = files["onelayer"]
    path = pemn.save(model, tmp_path / "m.pemn", **options)
    s = json.loads(invoke("inspect", path, "--json").stdout)
    assert s["dense"]["dtype"] == options["dense_dtype"]
    assert bool(s["dense"]["folded_batchnorm"]) == options.get("fold_batchnorm", False)
    assert s["totals"]["dense_fp32_bytes"] == real_dense_fp32_size(model, tmp_path)
    loaded = pemn.load(path, device="cpu")  # the model a user gets; its fp32 safetensors file
    save_file({k: v.numpy() for k, v in loaded.state_dict().items()}, str(tmp_path / "loaded.safetensors"))
    assert s["totals"]["dense_fp32_bytes"] == os.path.getsize(tmp_path / "loaded.safetensors")
    assert "BatchNorm folded" in invoke("inspect", path).stdout or not options.get("fold_batchnorm")
    if options["dense_dtype"] == "int8":  # every leftover a folded scale or shift: its bound is a byte per value
        assert s["totals"]["dense_bound_bytes"] == s["dense"]["parameters"]
        text = invoke("inspect", path).stdout
        assert f"(int8, BN folded) {s['dense']['parameters']:,} B" in text
        rows = pemn.read_pemn(path).header["dense"]["tensors"]  # [key, shape, "q8", outliers] as stored
        assert s["dense"]["outliers"] == sum(row[3] for row in rows if row[2] == "q8")
        assert f"int8 ({s['dense']['outliers']:,} far off their grid kept float16)" in " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# verify


@pytest.mark.parametrize("strategy", ["dense", "rp_rand"])
def test_verify_passes_on_a_good_file(files, strategy):
    result = invoke("verify", files[strategy][0])
    assert result.exit_code == 0, result.output
    for step in ("container", "header and checksums", "masks", "weights", "fingerprint"):
        assert step in result.stdout
    assert "FAILED" not in result.stdout and result.stderr == ""


def test_verify_fails_with_1_when_only_the_fingerprint_differs(files, tmp_path):
    path, _ = files["rp_copy"]

    def nudge_value(tensors):
        values = tensors["values.0"]
        assert values.dtype == np.float32 and values.size >= 1
        values.view(np.uint8)[1] ^= 0x40  # a mantissa bit of the first unique value

    bad = rewrite(path, tmp_path / "nudged.pemn", tensors=nudge_value)
    read_pemn(bad)  # container, header hash and every tensor checksum are valid
    result = invoke("verify", bad)
    line = assert_one_line_error(result, 1)
    assert "fingerprint" in line
    out = result.stdout
    assert "header and checksums" in out and "FAILED" in out
    assert out.index("FAILED") > out.index("weights")  # every step before the fingerprint passed
    assert invoke("inspect", bad).exit_code == 0  # inspect reads the header only


def test_verify_fails_with_1_on_a_corrupted_tensor(files, tmp_path):
    path, _ = files["mp"]
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # the last byte of the data buffer: a mask (uint8 tensors come last)
    (tmp_path / "flipped.pemn").write_bytes(bytes(blob))
    line = assert_one_line_error(invoke("verify", tmp_path / "flipped.pemn"), 1)
    assert "checksum" in line
    assert_one_line_error(invoke("inspect", tmp_path / "flipped.pemn"), 2)


@pytest.mark.parametrize("keep", [0, 5, 100, -7])
def test_truncated_file_exits_2_with_one_line(files, tmp_path, keep):
    path, _ = files["onelayer"]
    blob = path.read_bytes()
    (tmp_path / "cut.pemn").write_bytes(blob[:keep])
    for command in ("verify", "inspect"):
        line = assert_one_line_error(invoke(command, tmp_path / "cut.pemn"), 2)
        assert "safetensors" in line or "byte" in line


def test_missing_file_and_directory_exit_2_with_one_line(tmp_path):
    for command in ("inspect", "verify"):
        line = assert_one_line_error(invoke(command, tmp_path / "nope.pemn"), 2)
        assert "nope.pemn" in line
        assert_one_line_error(invoke(command, tmp_path), 2)


def test_not_a_pemn_file_exits_2(tmp_path):
    save_file({"w": np.ones(4, np.float32)}, str(tmp_path / "plain.safetensors"))
    line = assert_one_line_error(invoke("inspect", tmp_path / "plain.safetensors"), 2)
    assert "not a .pemn file" in line


def test_unreadable_file_exits_2_with_one_line(files, monkeypatch):
    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    for command in ("inspect", "verify"):
        line = assert_one_line_error(invoke(command, files["mp"][0]), 2)
        assert "Permission denied" in line and "mp.pemn" in line


def test_traceback_flag_shows_the_traceback(tmp_path):
    result = invoke("--traceback", "inspect", tmp_path / "nope.pemn")
    assert result.exit_code == 2 and "Traceback" in result.stderr


# ---------------------------------------------------------------------------------------------
# hostile strings


EVIL = "\x1b[31mred[/]\x1b]0;pwned\x07[bold]x[/bold]\u202eevil\x9b2J"


def test_hostile_names_and_provenance_never_reach_the_terminal_raw(tmp_path):
    model = nn.Sequential()
    model.add_module("conv" + EVIL, nn.Conv2d(1, 4, 3))
    model.add_module("flat", nn.Flatten())
    model.add_module("head[/]\x1b[2J", nn.Linear(4 * 6 * 6, 3))
    pemn.mask_(model, pemn.MaskConfig(strategy="onelayer"))
    provenance = {"dataset": EVIL, "accuracy": EVIL, "recipe": {EVIL: EVIL}}
    path = pemn.save(model, tmp_path / "evil.pemn", provenance=provenance)

    def evil_producer(header):
        header["producer"] = {"name": "pemn\x1b[2J[/]", "version": "\x1b]52;c;AAAA\x07"}

    evil = rewrite(path, tmp_path / "evil2.pemn", header=evil_producer)
    for file in (path, evil):
        for args in (("inspect", file), ("verify", file)):
            result = invoke(*args)
            assert result.exit_code == 0, result.output
            for bad in ("\x1b", "\x07", "\x9b", "\u202e"):
                assert bad not in result.output, (args, bad)
        shown = invoke("inspect", file).stdout
        assert "\\x1b[31mred[/]" in shown and "\\u202eevil" in shown  # visible, escaped, markup not applied
        doc = invoke("inspect", file, "--json")
        assert "\x1b" not in doc.stdout and doc.stdout.isascii()
        names = [layer["name"] for layer in json.loads(doc.stdout)["layers"]]
        assert names == ["conv" + EVIL, "head[/]\x1b[2J"]  # the data itself is intact in JSON
    # the dense fp32 size stays exact with such names (JSON escapes in the safetensors header)
    assert summarize(read_pemn(path), path)["totals"]["dense_fp32_bytes"] == real_dense_fp32_size(model, tmp_path)
    # an error message that quotes a hostile path is sanitized too
    result = invoke("inspect", tmp_path / ("missing" + EVIL))
    assert_one_line_error(result, 2)
    assert "\x1b" not in result.output


def test_non_finite_numbers_in_a_header_are_refused_in_one_line(files, tmp_path):
    path, _ = files["mp"]

    def crafted(header):  # NaN: only a crafted file has it
        header["provenance"] = {"accuracy": float("nan"), "loss": float("inf")}

    (tmp_path / "nan.pemn").write_bytes(edit_pemn(path.read_bytes(), header=crafted))
    for args in (("--json",), ()):
        result = invoke("inspect", tmp_path / "nan.pemn", *args)
        assert_one_line_error(result, 2)
        assert "NaN" in result.output


def test_sanitize_makes_controls_visible():
    assert sanitize("a\x1b[0mb\nc\td\x7f\u200b") == "a\\x1b[0mb\\nc\\td\\x7f\\u200b"
    assert sanitize({"k": [1, "\x07"]}) == '{"k":[1,"\\u0007"]}'  # non-strings: compact JSON
    assert sanitize("\ud800") == "\\ud800"  # a lone surrogate cannot even be encoded to the terminal


# ---------------------------------------------------------------------------------------------
# without torch


def test_inspect_and_verify_never_import_torch(files):
    path = str(files["rp_rand"][0])
    code = f"""
import sys
from pemn_compress.cli import main
codes = []
for args in (["inspect", {path!r}], ["inspect", {path!r}, "--json"], ["verify", {path!r}], ["--help"]):
    try:
        main(args)
    except SystemExit as exc:
        codes.append(exc.code)
assert codes == [0, 0, 0, 0], codes
assert "torch" not in sys.modules, "the CLI imported torch"
"""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "pemn_compress", "inspect", path, "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["totals"]["file_bytes"] == os.path.getsize(path)
    proc = subprocess.run([sys.executable, "-m", "pemn_compress", "verify", path + ".missing"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# packaging: the console script must work from an installed (non-editable) package


def test_every_source_folder_is_a_package():
    import setuptools

    found = set(setuptools.find_packages(where=str(REPO), include=["pemn_compress*"]))
    folders = {
        ".".join(p.relative_to(REPO).parts)
        for p in (REPO / "pemn_compress").rglob("*")
        if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))
    }
    assert folders <= found, sorted(folders - found)


@pytest.mark.parametrize("fold", [False, True])
def test_dense_bound_counts_batchnorm_as_two_values_per_channel(tmp_path, fold):
    """The leftovers' bound by hand: BatchNorm1d(6) is 2 x 6 values whether stored folded (weight, bias)
    or not (weight, bias, running_mean, running_var = 24 values); Linear(4, 6)'s bias 6 more; fp16: 2 bytes
    each, so (12 + 6) x 2 = 36 bytes. The masks are not part of it."""
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3, bias=False))
    pemn.mask_(model, pemn.MaskConfig(density=0.5))
    path = pemn.save(model, tmp_path / "bn.pemn", fold_batchnorm=fold)
    t = summarize(read_pemn(path), path)["totals"]
    assert t["dense_bound_bytes"] == 36
    assert t["dense_bytes"] == (12 + 6) * 2 if fold else (24 + 6) * 2  # stored fp16: folded or all four statistics
