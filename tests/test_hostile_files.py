"""Hostile `.pemn` files beyond formats/vectors/invalid (benchmarks/hostile_files.py): code references,
huge claimed sizes, escape sequences and markup, non-PEMN safetensors, headers that disagree with the
tensors, in both format versions, and version 2's header block (inflation bombs, declared sizes, header
tensors of the wrong kind). Each is refused with a PemnError (or, for text, shown escaped), nothing is
imported or run, and a version 2 header is refused before anything of its declared size is allocated."""

from __future__ import annotations

import json
import os
import re
import struct
import sys

import pytest
from conftest import load_benchmark

import pemn_compress as pemn
from pemn_compress import errors

hostile_files = load_benchmark("hostile_files")
HOSTILE = {h.name: h for h in hostile_files.build_hostile()}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if h.heavy else [])
                                  for n, h in HOSTILE.items()])
def test_hostile_file_is_harmless(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a `touch` that slipped through would land here
    result = hostile_files.check_hostile(HOSTILE[name], tmp_path)
    assert not hostile_files.problems(result), result
    assert not (tmp_path / hostile_files.MARKER).exists() and result["calls"] == []
    assert hostile_files.PLANTED_MODULE not in sys.modules


def test_every_group_is_covered():
    assert {h.group for h in HOSTILE.values()} == {"code", "size", "text", "not-pemn", "inconsistent", "v2-header"}
    refusals = {h.read for h in HOSTILE.values()} | {h.load for h in HOSTILE.values()}
    assert {"TrustError", "UnknownModelError", "ModelError", "LimitError", "ShapeError", "HeaderError",
            "ContainerError", "ChecksumError", "MissingKeyError"} <= refusals
    for h in HOSTILE.values():  # expectations name real PemnError classes
        for expected in {h.read, h.load} - {"accepted"}:
            assert issubclass(getattr(errors, expected), errors.PemnError)
    for group in ("code", "size", "text", "inconsistent"):  # each in both format versions
        names = {n for n, h in HOSTILE.items() if h.group == group}
        assert {n.removesuffix("_v2") for n in names if n.endswith("_v2")} == {
            n for n in names if not n.endswith("_v2")} - {"container_offsets_swapped"}


def test_versions_are_what_they_claim():
    """The version 2 files really are version 2 (header tensor, no pemn.header) and the others version 1."""
    fz = hostile_files.fuzz_loader()
    for name, h in HOSTILE.items():
        if h.group in ("code", "size", "text", "inconsistent"):
            version, tensors, metadata, _ = fz.parse_file(h.blob)
            assert version == (2 if name.endswith("_v2") else 1), name
            assert ("header" in tensors) == (version == 2) and ("pemn.header" in metadata) == (version == 1), name


def test_v2_header_files_are_small_and_refused_before_allocating():
    """What a version 2 hostile file declares is large (an inflation bomb, 999999999 header bytes, a 100 MiB
    header tensor); the file is not, and reading it stays within a few MiB of traced allocation
    (test_hostile_file_is_harmless checks each file's bound: ``max_peak``)."""
    v2 = {n: h for n, h in HOSTILE.items() if h.group == "v2-header"}
    assert len(v2) >= 15 and all(len(h.blob) <= 128 * 1024 and h.max_peak for h in v2.values())
    assert all(h.max_peak <= hostile_files.SMALL_PEAK for n, h in v2.items() if "bomb" in n or "header_bytes" in n)
    fz = hostile_files.fuzz_loader()
    bomb = v2["v2_inflation_bomb_declared_small"].blob
    (n,) = struct.unpack("<Q", bomb[:8])
    entries = json.loads(bomb[8 : 8 + n])
    stream = bomb[8 + n :][slice(*entries["header"]["data_offsets"])]
    declared = int(entries["__metadata__"]["pemn.header_bytes"])
    assert len(fz.inflate_bounded(stream, 1 << 30)) > 60 * (1 << 20) > 1000 * declared  # the bomb is real


def test_import_reference_runs_with_trust_only(tmp_path, monkeypatch):
    """The planted-module check is live: with trust_code=True the import happens (and leaves the marker)."""
    monkeypatch.chdir(tmp_path)
    blob = HOSTILE["import_module_build"].blob
    with hostile_files.watch_execution(tmp_path) as calls:
        with pytest.raises(errors.TrustError, match="trust_code"):
            pemn.load(blob, device="cpu")
        assert calls == [] and not (tmp_path / hostile_files.MARKER).exists()
        # build() returns None: the import ran, and what it gave is refused as the user code's fault
        refused = f"{hostile_files.PLANTED_MODULE}:build must return an nn.Module, found NoneType"
        with pytest.raises(errors.UserCodeError, match=re.escape(refused)):
            pemn.load(blob, device="cpu", trust_code=True)
        assert [c[0] for c in calls] == ["import_module"]
    assert (tmp_path / hostile_files.MARKER).exists()


def test_os_system_reference_never_calls_it(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(os, "system", lambda *a, **k: called.append(a) or 0)
    with pytest.raises(errors.TrustError):
        pemn.load(HOSTILE["import_os_system"].blob, device="cpu")
    assert called == []


def test_inspect_shows_escapes_as_text_and_markup_literally(tmp_path):
    result = hostile_files.check_hostile(HOSTILE["ansi_layer_names"], tmp_path)
    text = result["cli_text"]["inspect"]
    assert result["cli"]["inspect"]["exit"] == 0 and hostile_files.ESC not in text and "\x07" not in text
    assert "\\x1b[31mred\\x1b[0m" in text and "[bold red]markup[/]" in text and "\\u202eevil" in text
    result = hostile_files.check_hostile(HOSTILE["ansi_provenance_producer_metadata"], tmp_path)
    text = result["cli_text"]["inspect"]
    assert hostile_files.ESC not in text and "\\x1b[2J" in text and "[link=file:///etc/passwd]" in text
    result = hostile_files.check_hostile(HOSTILE["ansi_in_error_message"], tmp_path)
    for command, code in (("inspect", 0), ("verify", 2)):  # inspect reads the header only; verify decodes the masks
        text = result["cli_text"][command]
        assert result["cli"][command]["exit"] == code and hostile_files.ESC not in text and "\\x1b[31mred" in text
    assert "error:" in result["cli_text"]["verify"] and "kept weights" in result["cli_text"]["verify"]


def test_architecture_kwargs_cannot_hang_the_loader():
    """depth=10**6 would build millions of modules even on the meta device: refused within the file's budget.

    The file describes 26 tensors (layers + dense entries), so construction stops at 4 x 26 + 256 = 360
    registered tensors, whatever the depth asks for; sizes torch cannot even compute are refused too.
    Checked by the refusal's reason, not by a clock (a loaded machine must not fail it)."""
    for version in (1, 2):
        base = hostile_files.base_file("cm_onelayer_d50", version)
        for kwargs, reason in (
            ({"depth": 10**6}, "builds more than 360 tensors while the file describes 26 tensors"),
            ({"depth": 2**31}, "builds more than 360 tensors while the file describes 26 tensors"),
            ({"kernel_size": 2**31}, "cannot be built: RuntimeError"),
            ({"dim": 2**62}, "cannot be built: RuntimeError"),
        ):
            edit = hostile_files.edit(base)
            edit.header["architecture"]["kwargs"].update(kwargs)
            with pytest.raises(errors.ModelError, match=re.escape(reason)):
                pemn.load(edit.encode(), device="cpu")
