"""``pemn compress --help`` and ``pemn eval --help``: options grouped under headings, every option
described, and the grouping robust to options added later (pemn_compress._help)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pemn_compress._help import OTHER, SectionedCommand
from pemn_compress.cli import cli

COMPRESS_HEADINGS = ["Input", "Method", "Training", "Output", "Runtime"]


def help_text(*args: str, columns: int = 80) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def sections(text: str) -> dict[str, str]:
    """heading -> its body, for the headings after the description (lines such as ``Input:``)."""
    parts = re.split(r"^(\S[^\n]*):\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))  # one capturing group: text, (heading, body)*


def terms(body: str) -> list[str]:
    """The first column of a section's rows: ``--epochs INTEGER``, ``-o, --output PATH``, ``MODEL``."""
    return [m.group(1) for m in re.finditer(r"^  (\S.*?)(?:  |$)", body, flags=re.MULTILINE)]


def command(name: str) -> click.Command:
    return cli.get_command(click.Context(cli), name)


def options(cmd: click.Command) -> list[click.Option]:
    """The command object's options, help option included: a source independent of the rendered text."""
    return [p for p in cmd.get_params(click.Context(cmd)) if isinstance(p, click.Option)]


@pytest.mark.parametrize("columns", [80, 120])
def test_compress_help_lists_the_five_sections_in_order(columns):
    found = list(sections(help_text("compress", columns=columns)))
    assert found == COMPRESS_HEADINGS + [OTHER]  # the last one holds -h/--help


@pytest.mark.parametrize("name", ["compress", "eval"])
def test_every_option_is_listed_once_under_a_section_with_a_description(name):
    cmd = command(name)
    text = help_text(name)
    body = sections(text)
    listed = [(heading, term) for heading, section in body.items() for term in terms(section)]
    ctx = click.Context(cmd)
    for option in options(cmd):
        term = option.get_help_record(ctx)[0]
        where = [heading for heading, t in listed if t == term]
        assert len(where) == 1, (term, where)
        assert option.help and option.help.strip(), f"{term} has no help text"
        first_words = " ".join(option.help.split()[:3])
        assert first_words in " ".join(body[where[0]].split()), (term, first_words)
    assert len(listed) == len(options(cmd)) + 1  # the options and the one documented argument, nothing twice
    assert cmd.params[0].name in ("model", "file") and any(t in ("MODEL", "FILE") for _, t in listed)


def test_the_options_the_issue_named_say_what_they_do():
    text = " ".join(help_text("compress").split())
    for phrase in ("Passes over the training set", "Nesterov momentum 0.9", "warm-up over the first half epoch",
                   "OneCycleLR", "Weight decay on the mask scores", "label smoothing", "Temperature T",
                   "CPU threads torch uses"):
        assert phrase in text, phrase
    # existing phrases kept
    assert "This runs code from the file; only for files you trust" in text
    assert "fashion-mnist (alias fmnist), mnist, cifar10" in text
    body = sections(help_text("compress"))
    assert "--epochs INTEGER" in terms(body["Training"]) and "--threads N" in terms(body["Runtime"])
    assert "-o, --output PATH" in terms(body["Output"]) and "MODEL" in terms(body["Input"])
    eval_text = " ".join(help_text("eval").split())
    assert "Where to run: auto (CUDA when available" in eval_text


def test_an_option_no_section_names_goes_to_other_options_and_stale_names_are_ignored():
    @click.command("demo", cls=SectionedCommand, sections={"Input": ["data", "gone"], "Runtime": ["--threads"]})
    @click.option("--threads", type=int, help="Threads.")
    @click.option("--fold-batchnorm", is_flag=True, help="Added later, in no section.")
    @click.option("--data", help="Data set.")
    def demo(**_):
        pass

    result = CliRunner().invoke(demo, ["--help"])
    assert result.exit_code == 0, result.output
    body = sections(result.stdout)
    assert list(body) == ["Input", "Runtime", OTHER]
    assert terms(body["Input"]) == ["--data TEXT"] and terms(body["Runtime"]) == ["--threads INTEGER"]
    assert terms(body[OTHER]) == ["--fold-batchnorm", "--help"]
    assert CliRunner().invoke(demo, ["--data", "x", "--fold-batchnorm"]).exit_code == 0  # parsing untouched


def test_help_stays_torch_free():
    import subprocess
    import sys

    code = ("import sys; from pemn_compress.cli import main\n"
            "for args in (['compress', '--help'], ['eval', '--help']):\n"
            "    try: main(args)\n"
            "    except SystemExit as exc: assert exc.code == 0, exc.code\n"
            "assert 'torch' not in sys.modules, 'help imported torch'")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60,
                          cwd=repo)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_compress_flag_defaults_are_the_api_defaults():
    """`pemn compress` and ``CompressOptions`` declare each default separately (the CLI module does not
    import torch): every option both have starts at the same value, so the CLI and the Python API give
    the same file for the same input."""
    import dataclasses

    from pemn_compress.commands import compress
    from pemn_compress.options import CompressOptions

    api = {f.name: f.default for f in dataclasses.fields(CompressOptions) if f.default is not dataclasses.MISSING}
    shared = 0
    for param in compress.params:
        if param.name not in api:
            continue
        default = param.default
        if getattr(param, "is_flag", False) and type(default).__name__ == "Sentinel":
            default = False  # a plain flag (--learn-values): off unless given
        assert default == api[param.name], param.name
        shared += 1
    assert shared >= 30
