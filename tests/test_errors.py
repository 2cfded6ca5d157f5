"""The error policy: one exception tree, one exit-status table used through the ``pemn`` command, causes
kept for library users, and one sanitizer between untrusted text and the terminal."""

from __future__ import annotations

import builtins
import gzip
import json
import re

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import pemn_compress as pemn
from pemn_compress import errors
from pemn_compress._terminal import json_safe, one_line, sanitize
from pemn_compress.cli import cli
from pemn_compress.data import get_dataset, read_idx
from pemn_compress.inputs import read_source
from pemn_compress.nn.layers import MaskedLinear
from pemn_compress.strategies import LayerSource
from pemn_compress.train import TrainConfig, Trainer, evaluate
from pemn_compress.usercode import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def error_line(result, code: int) -> str:
    """The one ``error: ...`` line of a command that exited with ``code``, without a traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def pemn_file(tmp_path_factory):
    model = pemn.create_model("test_mlp")
    pemn.mask_(model, pemn.MaskConfig(strategy="mp"))
    return pemn.save(model, tmp_path_factory.mktemp("errors") / "mlp.pemn")


# ---------------------------------------------------------------------------------------------
# the tree


def drawn_tree() -> dict[str, tuple[str | None, str | None]]:
    """class -> (its parent, the builtin it also subclasses) as the errors module's docstring draws the tree:
    the documentation users read, and the oracle of the code's class statements."""
    tree: dict[str, tuple[str | None, str | None]] = {}
    path: list[str] = []
    for line in errors.__doc__.splitlines():
        found = re.match(r"^ {4}((?:[│ ] {3})*)([├└]── )?([A-Z]\w*Error)\b(?: \((\w+)\))?", line)
        if found:
            depth = len(found[1]) // 4 + bool(found[2])
            path[depth:] = [found[3]]
            tree[found[3]] = (path[depth - 1] if depth else None, found[4])
        elif tree and (builtin := re.match(r"^ {4}[│ ]*\((\w+)\)\s*$", line)):  # a builtin on the next line
            name = next(reversed(tree))
            tree[name] = (tree[name][0], builtin[1])
    return tree


def test_the_error_tree_is_the_drawn_one():
    """Every public error class is in the drawing, with exactly the bases drawn (its parent, then the builtin
    it also is); every exception ``import pemn_compress`` exports is one of them, or a wrapper the docstring
    names outside the tree (``TrainingFailed``)."""
    drawn = drawn_tree()
    public = {name for name in errors.__all__ if isinstance(getattr(errors, name), type)}
    assert set(drawn) == public
    for name, (parent, builtin) in drawn.items():
        bases = (getattr(errors, parent) if parent else Exception,) + ((getattr(builtins, builtin),) if builtin else ())
        assert getattr(errors, name).__bases__ == bases, name
    exported = [n for n in pemn.__all__ if isinstance(obj := getattr(pemn, n), type) and issubclass(obj, Exception)]
    outside = [n for n in exported if n not in drawn]
    assert all(getattr(pemn, n) is getattr(errors, n) for n in exported if n in drawn)
    assert all(f"``{n}``" in errors.__doc__ and not issubclass(getattr(pemn, n), errors.PemnError) for n in outside)


def test_exit_status_table():
    assert errors.exit_code(errors.ConfigError("x")) == 2
    assert errors.exit_code(errors.DataNotFoundError("x")) == 2
    assert errors.exit_code(errors.CommandError("x")) == 2
    assert errors.exit_code(errors.VerificationError("x")) == 1
    assert errors.exit_code(PermissionError(13, "Permission denied")) == 2
    assert errors.exit_code(BrokenPipeError()) == 1
    assert errors.exit_code(KeyboardInterrupt()) == 130
    assert errors.exit_code(RuntimeError("a bug")) == 1  # not in the table: Python's own status


# ---------------------------------------------------------------------------------------------
# exit statuses through the command line


def test_malformed_file_exits_2(tmp_path):
    (tmp_path / "junk.pemn").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    for command in ("inspect", "verify"):
        line = error_line(invoke(command, tmp_path / "junk.pemn"), 2)
        assert "not valid JSON" in line


def test_missing_file_is_a_usage_error_exit_2(tmp_path):
    line = error_line(invoke("inspect", tmp_path / "nope.pemn"), 2)
    assert line == f"error: {tmp_path / 'nope.pemn'}: no such file"


def test_failed_verification_exits_1_and_inspect_of_the_same_file_2(pemn_file, tmp_path):
    blob = bytearray(pemn_file.read_bytes())
    blob[-1] ^= 0xFF  # a byte of the data buffer: its checksum no longer matches
    bad = tmp_path / "flipped.pemn"
    bad.write_bytes(bytes(blob))
    assert error_line(invoke("verify", bad), 1).startswith("error: verification failed at header and checksums: ")
    assert "checksum" in error_line(invoke("inspect", bad), 2)


def test_bad_option_values_exit_2_in_the_command_lines_words(pemn_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = error_line(invoke("compress", "test_mlp", "--density", "2"), 2)
    assert line == "error: --density must be in (0, 1] (the fraction of weights kept), found 2.0"
    line = error_line(invoke("eval", pemn_file, "--batch-size", "0"), 2)
    assert line == "error: --batch-size must be >= 1, found 0"


def test_missing_data_set_exits_2_with_a_json_error_document(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("compress", "test_mlp", "--data", "mnist", "--data-root", tmp_path / "no-mnist", "--json")
    line = error_line(result, 2)
    assert "no-mnist" in line and "does not exist" in line
    doc = json.loads(result.stdout)
    assert doc == {"error": {"type": "DataNotFoundError", "message": line[len("error: "):], "checkpoint": None}}
    assert not list(tmp_path.glob("*.pemn"))


def test_traceback_flag_prints_the_chain_of_causes(tmp_path):
    (tmp_path / "junk.pemn").write_bytes(b"\xff" * 16)
    result = invoke("--traceback", "inspect", tmp_path / "junk.pemn")
    assert result.exit_code == 2 and "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: ")


# ---------------------------------------------------------------------------------------------
# causes kept for library users


def test_wrapped_os_error_is_the_cause(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(pemn.DataError) as info:
        read_idx(path)
    assert isinstance(info.value.__cause__, OSError)  # gzip.BadGzipFile
    assert issubclass(gzip.BadGzipFile, OSError)


def test_unreadable_checkpoint_keeps_torch_loads_error_as_the_cause(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 a truncated zip")
    with pytest.raises(pemn.ModelError, match="cannot read") as info:
        read_source(str(tmp_path / "bad.pt"), arch="test_mlp")
    assert isinstance(info.value.__cause__, Exception)


def test_user_code_import_error_is_the_cause():
    with pytest.raises(pemn.UserCodeError, match="no_such_module_for_pemn") as info:
        resolve("no_such_module_for_pemn:build")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_unknown_data_set_name_is_a_data_error():
    with pytest.raises(pemn.DataError, match="unknown data set 'imagenet-1k'"):
        get_dataset("imagenet-1k")


# ---------------------------------------------------------------------------------------------
# the sanitizer


HOSTILE = {
    "\x1b[2J\x1b[31mred": "\\x1b[2J\\x1b[31mred",  # clear screen, colour
    "\x1b]0;title\x07": "\\x1b]0;title\\x07",  # OSC: set the terminal title
    "\x9b31m": "\\x9b31m",  # C1 CSI
    "abc\u202edcba": "abc\\u202edcba",  # right-to-left override
    "a\u200bb\ufeffc\u2066d": "a\\u200bb\\ufeffc\\u2066d",  # zero width space, BOM, isolate
    "tag\U000e0041": "tag\\U000e0041",  # an invisible tag character outside the BMP
    "nbsp\u00a0here": "nbsp\\xa0here",
    "a\rb\tc\x00d\x7f": "a\\rb\\tc\\x00d\\x7f",
    "line\nbreak\u2028sep": "line\\nbreak\\u2028sep",
    "lone \ud800 surrogate": "lone \\ud800 surrogate",
    "café 漢字 [bold]x[/] C:\\path": "café 漢字 [bold]x[/] C:\\path",  # printable text unchanged
}


@pytest.mark.parametrize("text", list(HOSTILE))
def test_sanitize_makes_every_unprintable_character_visible(text):
    shown = sanitize(text)
    assert shown == HOSTILE[text]
    assert shown.isprintable() and sanitize(shown) == shown


def test_sanitize_shows_non_strings_as_compact_json():
    assert sanitize({"b": [1, None], "a": "\x1b"}) == '{"a":"\\u001b","b":[1,null]}'
    assert sanitize(2.5) == "2.5"


def test_one_line_folds_lines_then_sanitizes_and_shortens():
    assert one_line("first line\n\n\tsecond\r\nthird  ") == "first line second third"
    assert one_line("a\x1b[31mb\nc") == "a\\x1b[31mb c"
    assert one_line(ValueError()) == "ValueError"
    assert one_line(OSError("disk\nfull")) == "disk full"
    shortened = one_line("x" * 400)
    assert shortened == "x" * 297 + "..."
    assert one_line("y" * 400, limit=None) == "y" * 400


def test_json_safe_replaces_non_finite_numbers_at_any_depth():
    value = {"loss": float("nan"), "history": [1.5, (float("inf"), -float("inf"))], "name": "x"}
    assert json_safe(value) == {"loss": None, "history": [1.5, [None, None]], "name": "x"}


def test_a_hostile_path_reaches_the_terminal_as_one_visible_line(tmp_path):
    path = tmp_path / "missing\x1b[31m\nx\u202e.pemn"
    line = error_line(invoke("inspect", path), 2)
    assert line == f"error: {tmp_path}/missing\\x1b[31m x\\u202e.pemn: no such file"


# ---------------------------------------------------------------------------------------------
# errors of the right class


@pytest.mark.parametrize("field,value,shown", [
    ("epochs", "3", "'3'"),
    ("epochs", 2.5, "2.5"),
    ("lr", "0.1", "'0.1'"),
    ("lr", float("nan"), "nan"),
    ("amp", "yes", "'yes'"),
    ("max_steps", 0, "0"),
    ("optimizer", "lbfgs", "'lbfgs'"),
    ("label_smoothing", 1.0, "1.0"),
])
def test_train_config_names_the_option_and_the_value(field, value, shown):
    with pytest.raises(pemn.ConfigError) as info:
        TrainConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field} must ") and message.endswith(f"found {shown}")
    assert info.value.cli_message == "--" + field.replace("_", "-") + message[len(field):]


def test_empty_loaders_are_data_errors():
    model = nn.Linear(4, 2)
    with pytest.raises(pemn.DataError, match="training loader yields no batch"):
        Trainer(model, [], None, TrainConfig(epochs=1))
    with pytest.raises(pemn.DataError, match="evaluation loader yielded no sample"):
        evaluate(model, [])


def test_a_layer_that_does_not_match_its_plan_is_a_model_error():
    source = LayerSource(name="head", shape=(3, 5), bank=0, scale=1.0)
    with pytest.raises(pemn.ModelError, match=r"layer head: weight shape \(2, 5\) != planned \(3, 5\)"):
        MaskedLinear.from_dense(nn.Linear(5, 2), None, source, 0.5, torch.Generator())


def test_malformed_header_json_keeps_the_json_error_as_the_cause(tmp_path):
    header = b'{"__metadata__": {"format": "pemn"'  # cut short: not JSON
    path = tmp_path / "cut.pemn"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(pemn.ContainerError, match="not valid JSON") as info:
        pemn.read_pemn(path)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
