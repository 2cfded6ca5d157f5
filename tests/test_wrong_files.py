"""Wrong kinds of files, made the way a user makes them, are named in one line by the CLI and by
``pemn.load``: a PyTorch checkpoint (zip or legacy pickle), a text file, a plain safetensors file
without PEMN metadata, a `.pemn` cut short (with the exact byte counts). ``pemn compress`` names what
it was given instead of torch.load's error."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import pemn_compress as pemn
from pemn_compress.cli import cli
from pemn_compress.errors import ContainerError, HeaderError, LimitError
from pemn_compress.fileformat.sniff import describe, sniff

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPECTED = "expected a .pemn file (pemn compress writes one)"
TEXT = "hello, this is not a model\nsecond line\n"


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Real files in the current folder, named as a user would name them; returns what the test needs to know."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = pemn.create_model("test_mlp")
    state = model.state_dict()
    torch.save(state, "model.pt")  # zip archive
    torch.save(state, "legacy.pt", _use_new_zipfile_serialization=False)
    Path("bad.pt").write_text(TEXT)
    save_file({k: v.contiguous() for k, v in state.items()}, "weights.pemn")
    pemn.mask_(model, pemn.MaskConfig())
    pemn.save(model, "real.pemn")
    whole = Path("real.pemn").read_bytes()
    kept = len(whole) // 2
    Path("cut.pemn").write_bytes(whole[:kept])
    zipped = Path("model.pt").read_bytes()
    Path("cut.pt").write_bytes(zipped[: len(zipped) // 2])
    return {"tensors": len(state), "kept": kept, "whole": whole}


def _implied_size(blob: bytes) -> int:
    """The size a safetensors file's header implies: 8 + header length + the end of the last tensor."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header.pop("__metadata__", None)
    return 8 + n + max(info["data_offsets"][1] for info in header.values())


def what_it_is(name: str, files: dict) -> tuple[str, type]:
    """The description a wrong file gets, and the error class, worked out from how the test made it."""
    if name == "cut.pemn":
        kept, whole = files["kept"], files["whole"]
        (n,) = struct.unpack("<Q", whole[:8])
        assert kept > 8 + n  # half the file keeps the whole header: the size it implies is known
        total = _implied_size(whole)
        assert total == len(whole)
        message = (f"a .pemn file cut short (truncated: {kept} of {total} bytes; "
                   "its tensor data runs outside the file); "
                   "expected a complete .pemn file (copy or write it again)")
        return message, ContainerError
    plain = (f"a safetensors file without PEMN metadata ({files['tensors']} tensors; "
             "a dense model's weights, not a .pemn file)")
    what = {
        "model.pt": ("a PyTorch checkpoint (zip archive, torch.save)", ContainerError),
        "legacy.pt": ("a PyTorch checkpoint (legacy pickle format, torch.save)", ContainerError),
        "bad.pt": ('a text file ("hello, this is not a...")', ContainerError),
        "weights.pemn": (plain, HeaderError),
    }[name]
    return f"{what[0]}; {EXPECTED}", what[1]


WRONG = ["model.pt", "legacy.pt", "bad.pt", "weights.pemn", "cut.pemn"]


def error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0][len("error: "):]


@pytest.mark.parametrize("name", WRONG)
def test_inspect_names_the_file_kind(files, name):
    message, _ = what_it_is(name, files)
    assert error_line(CliRunner().invoke(cli, ["inspect", name])) == f"{name}: {message}"


@pytest.mark.parametrize("name", WRONG)
def test_verify_names_the_file_kind(files, name):
    message, _ = what_it_is(name, files)
    line = error_line(CliRunner().invoke(cli, ["verify", name]))
    assert line in (f"{name}: {message}", f"the data: {message}")  # verify reads the bytes, then names them


@pytest.mark.parametrize("name", ["model.pt", "cut.pemn"])
def test_eval_names_the_file_kind(files, name):
    message, _ = what_it_is(name, files)
    line = error_line(CliRunner().invoke(cli, ["eval", name, "--device", "cpu"]))
    assert line.endswith(message)


@pytest.mark.parametrize("name", WRONG)
def test_load_names_the_file_kind(files, name):
    message, error = what_it_is(name, files)
    with pytest.raises(error) as info:
        pemn.load(name, device="cpu")
    assert type(info.value) is error and str(info.value) == f"{name}: {message}"
    with pytest.raises(error) as info:  # bytes: no path to name
        pemn.load(Path(name).read_bytes(), device="cpu")
    assert str(info.value) == f"the data: {message}"


def test_a_real_pemn_file_still_loads(files):
    whole = files["whole"]
    assert describe(whole, len(whole)) is None and sniff(whole, len(whole)).kind == "pemn"
    pemn.load("real.pemn", device="cpu")
    assert CliRunner().invoke(cli, ["verify", "real.pemn"]).exit_code == 0


# ------------------------------------------------------------------------------------------------ compress


def compress_error(*args: str) -> str:
    return error_line(CliRunner().invoke(cli, ["compress", *args, "--no-distill", "--threads", "1"]))


def test_compress_names_a_text_file(files):
    assert compress_error("bad.pt", "--arch", "test_mlp") == (
        'cannot read bad.pt: it is a text file ("hello, this is not a..."), not a PyTorch checkpoint or state dict')


def test_compress_names_a_pemn_file(files):
    Path("real_copy.pt").write_bytes(files["whole"])
    for name in ("real.pemn", "real_copy.pt"):
        assert compress_error(name, "--arch", "test_mlp", "-o", "out.pemn") == (
            f"cannot read {name}: it is a .pemn file (already compressed): use pemn inspect / pemn eval")
    Path("real_copy.safetensors").write_bytes(files["whole"])  # a valid safetensors file, but not a model's weights
    assert compress_error("real_copy.safetensors", "--arch", "test_mlp") == (
        "cannot read real_copy.safetensors: it is a .pemn file (already compressed): use pemn inspect / pemn eval")


def test_compress_names_a_safetensors_file_and_a_checkpoint_misnamed(files):
    Path("weights.pt").write_bytes(Path("weights.pemn").read_bytes())
    assert compress_error("weights.pt", "--arch", "test_mlp") == (
        "cannot read weights.pt: it is a safetensors file: rename it to .safetensors")
    Path("model.safetensors").write_bytes(Path("model.pt").read_bytes())
    assert compress_error("model.safetensors", "--arch", "test_mlp") == (
        "cannot read model.safetensors: it is a PyTorch checkpoint (zip archive, torch.save): rename it to .pt")


def test_compress_names_a_checkpoint_cut_short(files):
    size = Path("cut.pt").stat().st_size
    assert compress_error("cut.pt", "--arch", "test_mlp") == (
        "cannot read cut.pt: it is a PyTorch checkpoint cut short "
        f"(a zip archive of {size} bytes without its end record)")


def test_compress_still_reads_real_checkpoints(files):
    from pemn_compress.inputs import read_source

    for name in ("model.pt", "legacy.pt"):
        assert read_source(name, "test_mlp").kind == "state_dict"


# ------------------------------------------------------------------------------------------------ sniffer


@pytest.mark.parametrize("blob, expected", [
    (b"", "an empty file"),
    (b"\x1f\x8b\x08\x00" + bytes(20), "a gzip-compressed file"),
    (b"PK\x03\x04" + bytes(22) + b"\x08\x00\x00\x00notes.md" + bytes(40), 'a zip archive (first entry "notes.md")'),
    ("\x1b[31mred\x1b[0m and \u202e text".encode(), 'a text file ("\\x1b[31mred\\x1b[0m and \\u202e t...")'),
    (b'{"json": "text", "is": "text too"}', 'a text file ("{\\"json\\": \\"text\\", \\"is...")'),
])
def test_describe(blob, expected):
    assert describe(blob, len(blob)).startswith(expected)


def test_binary_noise_and_short_files_are_left_to_the_reader():
    for blob in (bytes(range(256)), b"\x00\x01\x02", struct.pack("<Q", 10) + b"[1, 2, 3]"):
        assert describe(blob, len(blob)) is None


def test_a_bare_pickle_opcode_only_adds_a_hint():
    """Two bytes of evidence: the reader's own error (class and words) stays, the kind is added."""
    blob = b"\x80\x02\x63os\nsystem\n."
    assert not sniff(blob, len(blob)).sure
    with pytest.raises(
        LimitError, match=r"^the data: a Python pickle \(protocol 2\), not a .pemn file: safetensors header claims"
    ):
        pemn.read_pemn(blob)


def test_the_sniffer_and_the_reader_need_no_torch():
    code = ("import sys; import pemn_compress.fileformat.sniff, pemn_compress.fileformat.reader; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
