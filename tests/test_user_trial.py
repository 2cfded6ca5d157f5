"""What a new user hit in the 2026-12-07 trial, each pinned through the CLI.

Issue 24, item 6: ``pemn eval --arch module:function`` without the recorded architecture arguments;
an impossible ``--target-size`` that suggested the defaults; a missing data set worded ``root=`` on
the command line; a checksum error that did not name the file; and a paper-formula ratio below 1x
shown without a reason. Every command runs as typed, on a real Fashion-MNIST subset.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import pemn_compress as pemn
from pemn_compress.cli import cli
from pemn_compress.fileformat.constants import MASKS_TENSOR

# 128 training images, batch 64: 2 steps
QUICK = ["--max-train-samples", "128", "--epochs", "1", "--batch-size", "64", "--threads", "1", "--no-distill"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def folder(fmnist_cwd):
    """The user's working folder; the named data set ``fashion-mnist`` is the real subset."""
    return fmnist_cwd


def pemn_cli(*args, expect: int | None = 0):
    """``pemn ARGS`` as typed (click's runner, in process); asserts the exit code unless None."""
    result = CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "200"})
    if expect is not None:
        assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def error_line(result, code: int = 2) -> str:
    """The one ``error:`` line of a command that stopped with ``code``: the last on stderr (status lines
    may come before it), no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip("\n").splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


# ---------------------------------------------------------------------------------------------
# 1. pemn eval --arch module:function starts from the arguments the file records


FACTORY = """
from torch import nn


def build(model_name, hidden=16):  # model_name is required, like timm:create_model's
    assert model_name == "trial-mlp", model_name
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
"""


@pytest.fixture
def factory(folder):
    """A user's module with a factory that needs a positional argument (its own name: imports are cached)."""
    name = "trial_factory_eval"
    (folder / f"{name}.py").write_text(FACTORY)
    yield f"{name}:build"
    sys.modules.pop(name, None)


def test_eval_arch_reference_reuses_the_recorded_arguments(factory):
    made = json.loads(pemn_cli("compress", factory, "--arch-kwarg", "model_name=trial-mlp", "--arch-kwarg",
                               "hidden=24", *QUICK, "-o", "mine.pemn", "--json").stdout)
    evaluated = pemn_cli("eval", "mine.pemn", "--arch", factory, "--json")
    assert json.loads(evaluated.stdout)["accuracy"] == made["accuracy"]
    # --arch-kwarg still overrides what the file records: hidden=8 builds a model the file does not fit
    refused = pemn_cli("eval", "mine.pemn", "--arch", factory, "--arch-kwarg", "hidden=8", expect=None)
    assert "model_name" not in error_line(refused)


# ---------------------------------------------------------------------------------------------
# 2. an impossible --target-size suggests only what would make the file smaller


def test_impossible_budget_suggests_no_option_the_run_already_uses(folder):
    line = error_line(pemn_cli("compress", "test_mlp", *QUICK, "--target-size", "10", expect=None))
    assert "--target-size 10 B is below the smallest file" in line
    assert "--dense-dtype" not in line and "--fold-batchnorm" not in line
    smallest = line.rsplit("--target-size ", 1)[1].split()[0]  # the budget the message asks for
    assert int(smallest) > 10
    assert not list(folder.glob("*.pemn"))


def test_impossible_budget_suggests_the_options_that_shrink_the_file(folder):
    line = error_line(pemn_cli("compress", "test_mlp", *QUICK, "--target-size", "10", "--dense-dtype", "float32",
                               "--no-fold-batchnorm", expect=None))
    assert "--dense-dtype float16" in line and "--fold-batchnorm" in line


# ---------------------------------------------------------------------------------------------
# 3. a missing data set names --data-root on the command line, root= in Python


@pytest.mark.parametrize("data", ["cifar10", "mnist", "fashion-mnist"])
def test_missing_data_set_names_the_cli_option(folder, data):
    empty = folder / "no-data-here"
    empty.mkdir()
    line = error_line(pemn_cli("compress", "test_mlp", "--data", data, "--data-root", empty, *QUICK, expect=None))
    assert "--data-root" in line and "root=" not in line and str(empty) in line


@pytest.mark.parametrize("data", ["cifar10", "mnist"])
def test_missing_data_set_names_the_python_argument(tmp_path, data):
    with pytest.raises(pemn.DataNotFoundError) as caught:
        pemn.get_dataset(data, root=tmp_path / "missing")
    assert "root=" in str(caught.value) and "--data-root" not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# 4. a corrupted file's checksum error names it; inspect explains a paper ratio below 1x


def flip_mask_byte(src: Path, dst: Path) -> Path:
    """``src`` with one byte of its masks tensor flipped (read from the safetensors layout itself)."""
    blob = bytearray(src.read_bytes())
    (n,) = struct.unpack("<Q", blob[:8])
    begin, _ = json.loads(blob[8 : 8 + n])[MASKS_TENSOR]["data_offsets"]
    blob[8 + n + begin] ^= 0xFF
    dst.write_bytes(bytes(blob))
    return dst


def test_checksum_error_names_the_file(folder):
    pemn_cli("compress", "test_mlp", *QUICK, "-o", "good.pemn")
    flip_mask_byte(folder / "good.pemn", folder / "broken.pemn")
    for command, code in (("verify", 1), ("inspect", 2), ("eval", 2)):
        line = error_line(pemn_cli(command, "broken.pemn", expect=None), code)
        assert "broken.pemn: data checksum mismatch" in line, (command, line)


def test_inspect_explains_a_paper_ratio_below_one(folder):
    pemn_cli("compress", "test_mlp", *QUICK, "--strategy", "dense", "-o", "dense.pemn")
    dense = pemn_cli("inspect", "dense.pemn").stdout
    ratio = json.loads(pemn_cli("inspect", "dense.pemn", "--json").stdout)["totals"]["paper_ratio"]
    assert ratio < 1 and "32 bits per value and every weight has its own value with strategy dense" in dense
