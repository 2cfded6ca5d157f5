"""One declaration of every option (``pemn_compress.defaults.OPTIONS``): the CLI, ``pemn.compress``,
``CompressOptions``, ``MaskConfig`` and ``TrainConfig`` all default to it, and each default a measurement
chose names a committed report that exists.

The expected values are read from the declaration itself, never from a second list: a default typed
anywhere else (a click option, a dataclass field, a keyword of ``compress``) that drifts from it fails here.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import click
import pytest

import pemn_compress as pemn
from pemn_compress.commands import compress as compress_command
from pemn_compress.defaults import OPTIONS
from pemn_compress.options import CompressOptions
from pemn_compress.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def field_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


CLI = {param.name: param for param in compress_command.params if isinstance(param, click.Option)}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_door_defaults_to_the_declaration(name):
    declared = OPTIONS[name].default
    assert field_defaults(CompressOptions)[name] == declared
    assert getattr(CompressOptions(model="test_mlp"), name) == declared
    for cls in (pemn.MaskConfig, TrainConfig):  # the configs that share the option share its default
        if name in field_defaults(cls):
            assert field_defaults(cls)[name] == declared, cls.__name__
    if OPTIONS[name].flags:
        param = CLI[name]
        cli_default = () if OPTIONS[name].kind == "kwargs" else param.default
        assert cli_default == (() if OPTIONS[name].kind == "kwargs" else declared)
        assert param.help.startswith(OPTIONS[name].help)
    else:
        assert name not in CLI


def test_the_cli_parses_to_the_declared_defaults(monkeypatch):
    # what the command hands the library when the user types nothing but a model
    seen = {}

    def capture(options, progress):
        seen.update(options.to_dict())
        raise KeyboardInterrupt

    monkeypatch.setattr("pemn_compress.pipeline.compress", capture)
    from click.testing import CliRunner

    CliRunner().invoke(compress_command, ["test_mlp"])
    assert seen == CompressOptions(model="test_mlp").to_dict()


def test_compress_takes_every_option_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pemn.ConfigError, match="unknown option"):
        pemn.compress("test_mlp", epoch=3)  # a typo of epochs: refused before anything runs
    accepted = {p for p in inspect.signature(pemn.compress).parameters} | set(OPTIONS)
    assert set(field_defaults(CompressOptions)) <= accepted


def test_measured_defaults_cite_a_committed_report():
    cited = {name: option.evidence for name, option in OPTIONS.items() if option.evidence}
    assert {"density", "distribution", "weight_decay", "augment", "rp_mode"} <= set(cited)
    for name, path in cited.items():
        assert (REPO / path).is_file(), (name, path)
        assert path in CLI[name].help  # the help text says where the default comes from
