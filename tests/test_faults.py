"""Fault injection on `pemn compress` (test_mlp, 256 real Fashion-MNIST images, 2 epochs, 1 thread):
SIGKILL after a checkpoint, a full disk, Ctrl-C. Afterwards the output is absent, the previous file or
the complete file (never a partial one), no temp file remains, the checkpoint loads, and `--resume`
finishes with bytes identical to an uninterrupted run. The scenarios live in tests/support/workspace.py
(which benchmarks/reliability.py also runs repeatedly, as a command, for benchmarks/results/reliability.md)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from support import workspace as scenarios

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
linux_only = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="the disk-full patch resolves fds through /proc"
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    workspace = scenarios.Workspace(tmp_path_factory.mktemp("faults"))
    workspace.reference()
    return workspace


def _assert_ok(result: dict) -> None:
    failed = [f"{c['check']}: {c['detail']}" for c in result["checks"] if not c["ok"]]
    assert result["ok"] and not failed, (failed, {k: v for k, v in result.items() if k != "checks"})


@pytest.mark.parametrize("run,with_previous", [(0, False), (1, True)])
def test_sigkill_after_a_checkpoint(ws, run, with_previous):
    result = scenarios.scenario_sigkill(ws, run, random.Random(1000 + run), with_previous)
    _assert_ok(result)
    assert result["output_after_kill"] in (("previous", "complete") if with_previous else ("absent", "complete"))


def test_checkpointing_and_another_process_do_not_change_the_bytes(ws):
    ws.kill_window()
    assert ws.fresh_run["exit"] == 0 and ws.fresh_run["identical"], ws.fresh_run


def test_next_run_removes_temp_files_a_killed_run_left(ws):
    out = ws.folder / "stale.pemn"
    stale = [ws.folder / ".stale.pemn.k1ll3d_0.tmp", ws.folder / ".stale.pemn.ckpt.k1ll3d_1.tmp"]
    other = ws.folder / ".another.pemn.k1ll3d_2.tmp"
    for path in stale + [other]:
        path.write_bytes(b"partial")
    result = ws.cli(*scenarios.COMPRESS_ARGS, "-o", out)
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale) and other.exists()  # only this output's own temp files
    assert out.read_bytes() == ws.reference()


@linux_only
def test_disk_full_during_the_final_save(ws):
    result = scenarios.scenario_disk_full(ws, 0, everywhere=False)
    _assert_ok(result)
    assert result["error"].startswith("error: [Errno 28] No space left on device; checkpoint saved to")


@linux_only
def test_disk_full_on_every_write(ws):
    _assert_ok(scenarios.scenario_disk_full(ws, 1, everywhere=True))


@pytest.mark.parametrize("real_signal", [False, True], ids=["hook", "sigint"])
def test_ctrl_c_then_resume(ws, real_signal):
    _assert_ok(scenarios.scenario_ctrl_c(ws, int(real_signal), random.Random(7 + real_signal), real_signal))
