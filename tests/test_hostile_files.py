"""Hostile `.pemn` files beyond formats/vectors/invalid: code references, huge claimed sizes, escape sequences
and markup, non-PEMN safetensors, headers that disagree with the tensors, in both format versions, version
2's header block (inflation bombs, declared sizes, header tensors of the wrong kind) and version 3's q8 rows
(65,536 values or outliers declared over a few stored codes, an outlier position past its row). Each is refused
with a PemnError (or, for text, shown escaped), nothing is imported or run, and a version 2 header or a version 3
q8 row is refused before anything of its declared size is allocated.

The corpus is written by ``python benchmarks/hostile_files.py --write DIR``, as a user runs it, with the outcome
its author declares for each file; tests/support/hostile.py gives each file to the package readers, the reference
reader (the spec's: the two must agree on accepting it), ``pemn.load`` and the CLI, with code execution watched."""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import zlib

import pytest
from conftest import REPO, edit_pemn, run_script
from support.hostile import ESC, check_hostile, problems, read_corpus, watch_execution

import pemn_compress as pemn
from pemn_compress import errors

GROUPS = ["code", "size", "text", "not-pemn", "inconsistent", "v2-header", "v3-q8"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[dict, dict[str, tuple[dict, bytes]]]:
    """(marker and planted module names, name -> (manifest entry, bytes)) of the written corpus."""
    folder = tmp_path_factory.mktemp("hostile")
    run_script("benchmarks/hostile_files.py", "--write", folder)
    names, files = read_corpus(folder)
    return names, {entry["name"]: (entry, blob) for entry, blob in files}


def _harmless(corpus, selected: list[str], tmp_path) -> None:
    names, files = corpus
    found = {}
    for name in selected:
        result = check_hostile(*files[name], tmp_path, names)
        found[name] = problems(result) + [f"calls {result['calls']}"] * bool(result["calls"])
    assert not {name: p for name, p in found.items() if p}
    assert not (tmp_path / names["marker"]).exists() and names["planted_module"] not in sys.modules


@pytest.mark.parametrize("group", GROUPS)
def test_hostile_files_are_harmless(group, corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a `touch` that slipped through would land here
    selected = [n for n, (entry, _) in corpus[1].items() if entry["group"] == group and not entry["heavy"]]
    assert selected
    _harmless(corpus, selected, tmp_path)


@pytest.mark.slow
def test_heavy_hostile_files_are_harmless(corpus, tmp_path, monkeypatch):
    """The large files (a 5.7 MB header of 100,001 tensors): readers and pemn.load only."""
    monkeypatch.chdir(tmp_path)
    selected = [n for n, (entry, _) in corpus[1].items() if entry["heavy"]]
    assert selected
    _harmless(corpus, selected, tmp_path)


def test_v2_header_files_are_small_and_the_bomb_is_real(corpus):
    """What a version 2 hostile file declares is large (an inflation bomb, 999999999 header bytes, a 100 MiB
    header tensor); the file is not (test_hostile_files_are_harmless checks each file's traced peak). The bomb
    inflates, by zlib itself, to more than a thousand times what the file declares."""
    v2 = {n: f for n, f in corpus[1].items() if f[0]["group"] == "v2-header"}
    assert all(len(blob) <= 128 * 1024 for _, blob in v2.values())
    bomb = v2["v2_inflation_bomb_declared_small"][1]
    (n,) = struct.unpack("<Q", bomb[:8])
    entries = json.loads(bomb[8 : 8 + n])
    stream = bomb[8 + n :][slice(*entries["header"]["data_offsets"])]
    declared = int(entries["__metadata__"]["pemn.header_bytes"])
    assert len(zlib.decompressobj(-15).decompress(stream, 1 << 30)) > 60 * (1 << 20) > 1000 * declared


def test_import_reference_runs_with_trust_only(corpus, tmp_path, monkeypatch):
    """The planted-module check is live: with trust_code=True the import happens (and leaves the marker)."""
    monkeypatch.chdir(tmp_path)
    names, files = corpus
    blob = files["import_module_build"][1]
    with watch_execution(tmp_path, names["marker"], names["planted_module"]) as calls:
        with pytest.raises(errors.TrustError, match="trust_code"):
            pemn.load(blob, device="cpu")
        assert calls == [] and not (tmp_path / names["marker"]).exists()
        # build() returns None: the import ran, and what it gave is refused as the user code's fault
        refused = f"{names['planted_module']}:build must return an nn.Module, found NoneType"
        with pytest.raises(errors.UserCodeError, match=re.escape(refused)):
            pemn.load(blob, device="cpu", trust_code=True)
        assert [c[0] for c in calls] == ["import_module"]
    assert (tmp_path / names["marker"]).exists()


def test_os_system_reference_never_calls_it(corpus, monkeypatch):
    called = []
    monkeypatch.setattr(os, "system", lambda *a, **k: called.append(a) or 0)
    with pytest.raises(errors.TrustError):
        pemn.load(corpus[1]["import_os_system"][1], device="cpu")
    assert called == []


def test_inspect_shows_escapes_as_text_and_markup_literally(corpus, tmp_path):
    names, files = corpus
    result = check_hostile(*files["ansi_layer_names"], tmp_path, names)
    text = result["cli_text"]["inspect"]
    assert result["cli"]["inspect"]["exit"] == 0 and ESC not in text and "\x07" not in text
    assert "\\x1b[31mred\\x1b[0m" in text and "[bold red]markup[/]" in text and "\\u202eevil" in text
    result = check_hostile(*files["ansi_provenance_producer_metadata"], tmp_path, names)
    text = result["cli_text"]["inspect"]
    assert ESC not in text and "\\x1b[2J" in text and "[link=file:///etc/passwd]" in text
    result = check_hostile(*files["ansi_in_error_message"], tmp_path, names)
    for command, code in (("inspect", 0), ("verify", 2)):  # inspect reads the header only; verify decodes the masks
        text = result["cli_text"][command]
        assert result["cli"][command]["exit"] == code and ESC not in text and "\\x1b[31mred" in text
    assert "error:" in result["cli_text"]["verify"] and "kept weights" in result["cli_text"]["verify"]


@pytest.mark.parametrize("version", [1, 2])
def test_architecture_kwargs_cannot_hang_the_loader(version):
    """depth=10**6 would build millions of modules even on the meta device: refused within the file's budget.

    The file describes 26 tensors (layers + dense entries), so construction stops at 4 x 26 + 256 = 360
    registered tensors, whatever the depth asks for; sizes torch cannot even compute are refused too.
    Checked by the refusal's reason, not by a clock (a loaded machine must not fail it)."""
    folder = REPO / "formats" / "vectors" / ("valid" if version == 1 else "v2/valid")
    base = (folder / "cm_onelayer_d50.pemn").read_bytes()
    for kwargs, reason in (
        ({"depth": 10**6}, "builds more than 360 tensors while the file describes 26 tensors"),
        ({"depth": 2**31}, "builds more than 360 tensors while the file describes 26 tensors"),
        ({"kernel_size": 2**31}, "cannot be built: RuntimeError"),
        ({"dim": 2**62}, "cannot be built: RuntimeError"),
    ):
        blob = edit_pemn(base, header=lambda head, kwargs=kwargs: head["architecture"]["kwargs"].update(kwargs))
        with pytest.raises(errors.ModelError, match=re.escape(reason)):
            pemn.load(blob, device="cpu")
