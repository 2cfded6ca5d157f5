"""A workspace for fault injection on ``pemn compress``, and the fault scenarios the tests and the
reliability campaign run (test_mlp, 256 real Fashion-MNIST images, 2 epochs, 1 thread):

* ``scenario_sigkill``: SIGKILL a random delay after the first checkpoint;
* ``scenario_disk_full``: ENOSPC during the final save, or on every write;
* ``scenario_ctrl_c``: Ctrl-C after a random step (``support/interrupted.py``; a real SIGINT or not);

each followed by ``--resume`` and compared byte for byte with an uninterrupted run. A scenario returns
its checks (``{"check", "ok", "detail"}``) and ``ok``; tests/test_faults.py asserts them.

    PYTHONPATH=.:tests python -m support.workspace --repeats 3 --json faults.json

runs every scenario ``--repeats`` times, then the determinism matrix (``support/determinism.py``) and a
repeated ``pemn compress``, and writes what happened as JSON: the campaign of benchmarks/reliability.py.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import write_idx

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PREVIOUS = ROOT / "formats" / "vectors" / "valid" / "cm_onelayer_d50.pemn"  # any valid file: "the previous output"

COMPRESS_ARGS = ["test_mlp", "--max-train-samples", "256", "--epochs", "2", "--batch-size", "16", "--threads", "1",
                 "--quiet"]  # 16 steps per epoch, 32 in all
TOTAL_STEPS = 32


def fmnist_subset(folder: Path, train: int = 2000, test: int = 500) -> Path:
    """A real Fashion-MNIST subset as an IDX folder (fast to load; PEMN_FASHION_MNIST_DIR points here)."""
    from pemn_compress.data import get_dataset

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "t10k-labels-idx1-ubyte").exists():
        return folder
    data = get_dataset("fashion-mnist").subset(train, test, seed=0)
    write_idx(folder / "train-images-idx3-ubyte", data.x_train[:, 0])
    write_idx(folder / "train-labels-idx1-ubyte", data.y_train)
    write_idx(folder / "t10k-images-idx3-ubyte", data.x_test[:, 0])
    write_idx(folder / "t10k-labels-idx1-ubyte", data.y_test)
    return folder


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temp_leftovers(output: Path) -> list[str]:
    """Temporary files of ``atomic_write`` (output or checkpoint) and of the output-folder probe."""
    folder = output.parent
    return sorted(
        p.name
        for p in folder.iterdir()
        if (p.name.startswith(f".{output.name}.") and p.name.endswith(".tmp")) or p.name.startswith(".pemn-probe-")
    )


def file_state(path: Path, previous: bytes | None, reference: bytes) -> str:
    """'absent', 'previous' (the file that was there before), 'complete' (= the uninterrupted run) or 'other'."""
    if not path.exists():
        return "absent"
    blob = path.read_bytes()
    if previous is not None and blob == previous:
        return "previous"
    if blob == reference:
        return "complete"
    return "other"


class Workspace:
    """A folder with the data subset, an uninterrupted reference run, and helpers to run ``pemn compress``."""

    def __init__(self, folder: Path, data_dir: Path | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data = fmnist_subset(data_dir or self.folder / "fmnist")
        self.env = {"PEMN_FASHION_MNIST_DIR": str(self.data)}
        self._reference: bytes | None = None
        self._window: float | None = None
        self.fresh_run: dict | None = None  # the calibration run in a fresh interpreter (see kill_window)
        # any valid .pemn file stands for "the previous output" a failed run must leave intact
        self.previous = PREVIOUS.read_bytes()

    def cli(self, *args: str, env: dict | None = None):
        """``pemn compress ARGS`` in this process (click's CliRunner)."""
        from click.testing import CliRunner

        from pemn_compress.commands import compress

        return CliRunner().invoke(compress, [str(a) for a in args], env={**self.env, **(env or {})})

    def reference(self) -> bytes:
        if self._reference is None:
            out = self.folder / "reference.pemn"
            result = self.cli(*COMPRESS_ARGS, "-o", out)
            if result.exit_code != 0:
                raise RuntimeError(f"reference run failed ({result.exit_code}): {result.output[-2000:]}")
            self._reference = out.read_bytes()
        return self._reference

    def kill_window(self) -> float:
        """Seconds from the first checkpoint to the output file of a ``--checkpoint-every 2`` run in a fresh
        interpreter (the rest of training, the evaluation and the write; the interpreter's exit comes after).

        Measured once; that run's output must also equal the in-process reference (same command, another
        process, checkpoints on): ``fresh_run`` records it."""
        if self._window is None:
            from pemn_compress.checkpoints import checkpoint_path

            out = self.folder / "fresh.pemn"
            out.unlink(missing_ok=True)
            ckpt = checkpoint_path(out)
            proc = self.subprocess(*COMPRESS_ARGS, "-o", out, "--checkpoint-every", "2")
            first = written = None
            while proc.poll() is None:
                if first is None and ckpt.exists():
                    first = time.monotonic()
                if written is None and out.exists():
                    written = time.monotonic()
                time.sleep(0.001)
            self._window = (written - first) if first is not None and written is not None else 0.5
            stderr = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
            blob = out.read_bytes() if out.exists() else b""
            self.fresh_run = {"exit": proc.returncode, "identical": blob == self.reference(), "sha256": sha256(blob),
                              "window_s": self._window, "stderr": stderr[-300:]}
        return self._window

    def _environ(self) -> dict:
        """This process's environment with the data subset, ``pemn_compress`` and ``support`` importable."""
        return {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}

    def subprocess(self, *args: str, **popen) -> subprocess.Popen:
        env = self._environ()
        return subprocess.Popen([sys.executable, "-m", "pemn_compress", "compress", *map(str, args)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)

    def interrupted(self, step: int, real_signal: bool, *args: str) -> subprocess.CompletedProcess:
        """``pemn compress ARGS`` in another process, interrupted right after optimizer step ``step``
        (``support/interrupted.py``; ``real_signal``: a real SIGINT, as a first Ctrl-C)."""
        env = self._environ()
        command = [sys.executable, "-m", "support.interrupted", str(step),
                   *(["--sigint"] if real_signal else []), "--", *map(str, args)]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _check(checks: list, name: str, ok: bool, detail: str = "") -> None:
    checks.append({"check": name, "ok": bool(ok), "detail": detail})


def _resume(ws: Workspace, out: Path, checks: list) -> None:
    """``--resume`` must finish with the uninterrupted run's bytes, remove the checkpoint, leave no temp file."""
    from pemn_compress.checkpoints import checkpoint_path

    result = ws.cli(*COMPRESS_ARGS, "-o", out, "--resume")
    _check(checks, "resume exits 0", result.exit_code == 0, f"exit {result.exit_code}: {result.output[-300:]}")
    resumed = file_state(out, None, ws.reference())
    _check(checks, "resumed file byte-identical to an uninterrupted run", resumed == "complete")
    _check(checks, "checkpoint removed after the resume", not checkpoint_path(out).exists())
    _check(checks, "no temp file after the resume", not temp_leftovers(out), ", ".join(temp_leftovers(out)))


def _checkpoint_loads(path: Path, checks: list) -> int | None:
    from pemn_compress.checkpoints import read_checkpoint

    try:
        state = read_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - reported
        _check(checks, "checkpoint loads (torch.load weights_only)", False, f"{type(exc).__name__}: {exc}")
        return None
    step = int(state["trainer"]["step"])
    _check(checks, "checkpoint loads (torch.load weights_only)", True, f"step {step}")
    return step


# ---------------------------------------------------------------------------------------------- fault scenarios
def scenario_sigkill(ws: Workspace, index: int, rng: random.Random, with_previous: bool) -> dict:
    """SIGKILL ``pemn compress`` a random delay after its first checkpoint (``--checkpoint-every 2``)."""
    from pemn_compress.checkpoints import checkpoint_path
    from pemn_compress.fileformat.reader import decode_weights, read_pemn, verify_fingerprint

    reference = ws.reference()
    window = ws.kill_window()
    out = ws.folder / f"kill{index}.pemn"
    ckpt = checkpoint_path(out)
    for stale in (out, ckpt):
        stale.unlink(missing_ok=True)
    previous = ws.previous if with_previous else None
    if previous is not None:
        out.write_bytes(previous)
    checks: list = []
    proc = ws.subprocess(*COMPRESS_ARGS, "-o", out, "--checkpoint-every", "2")
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    delay = rng.uniform(0, 1.1 * window)
    time.sleep(delay)
    running = proc.poll() is None
    if running:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    state = file_state(out, previous, reference)
    after_kill_temp = temp_leftovers(out)
    _check(checks, "output is absent, the previous file, or the complete file",
           state in ("absent", "previous", "complete") and (state != "absent" or previous is None), state)
    if state == "complete":
        pf = read_pemn(out)
        verify_fingerprint(pf, decode_weights(pf))
    step = _checkpoint_loads(ckpt, checks) if ckpt.exists() else None
    if ckpt.exists():
        _resume(ws, out, checks)
    else:
        _check(checks, "no checkpoint only when the run had finished its work", state == "complete", stderr[-300:])
        _check(checks, "no temp file", not after_kill_temp, ", ".join(after_kill_temp))
    return {"scenario": "sigkill", "run": index, "delay_s": round(delay, 3), "killed": running,
            "previous_file": with_previous, "output_after_kill": state, "checkpoint_step": step,
            "temp_files_after_kill": after_kill_temp, "checks": checks, "ok": all(c["ok"] for c in checks)}


class _FailingFile:
    """A file object whose ``write`` fails with ENOSPC (a full disk)."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@contextlib.contextmanager
def disk_full(fails):
    """Make ``container.atomic_write``'s writes fail with ENOSPC for the temp files whose name (resolved
    through /proc/self/fd) satisfies ``fails(name)``; the other writes go through."""
    from pemn_compress.fileformat import container

    real_os = container.os

    class _OS:
        def __getattr__(self, name):
            return getattr(real_os, name)

        @staticmethod
        def fdopen(fd, *args, **kwargs):
            fh = real_os.fdopen(fd, *args, **kwargs)
            return _FailingFile(fh) if fails(Path(real_os.readlink(f"/proc/self/fd/{fd}")).name) else fh

    container.os = _OS()
    try:
        yield
    finally:
        container.os = real_os


def scenario_disk_full(ws: Workspace, index: int, everywhere: bool) -> dict:
    """ENOSPC during the final save (checkpoints still writable), or on every write (checkpoints too)."""
    from pemn_compress.checkpoints import checkpoint_path

    reference = ws.reference()
    out = ws.folder / f"full{index}.pemn"
    ckpt = checkpoint_path(out)
    ckpt.unlink(missing_ok=True)
    out.write_bytes(ws.previous)
    checks: list = []
    if everywhere:
        with disk_full(lambda name: True):
            result = ws.cli(*COMPRESS_ARGS, "-o", out, "--checkpoint-every", "2")
    else:  # the output's temp file is ".<out>.XXXX.tmp", the checkpoint's ".<out>.ckpt.XXXX.tmp"
        with disk_full(lambda name: name.startswith(f".{out.name}.") and not name.startswith(f".{ckpt.name}.")):
            result = ws.cli(*COMPRESS_ARGS, "-o", out)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    _check(checks, "exit code 2", result.exit_code == 2, f"exit {result.exit_code}")
    _check(checks, "one-line error naming the full disk", last.startswith("error: ") and "No space left" in last
           and sum(line.startswith("error") for line in lines) == 1 and "Traceback" not in result.output, last)
    _check(checks, "previous output file intact", file_state(out, ws.previous, reference) == "previous")
    _check(checks, "no temp file", not temp_leftovers(out), ", ".join(temp_leftovers(out)))
    if everywhere:
        _check(checks, "no checkpoint (it could not be written either)", not ckpt.exists())
    else:
        _check(checks, "the error says how to resume", "rerun with --resume" in last, last)
        if ckpt.exists() and _checkpoint_loads(ckpt, checks) is not None:
            _resume(ws, out, checks)
        else:
            _check(checks, "checkpoint written", False)
    return {"scenario": "disk full" + (" (every write)" if everywhere else " (final save)"), "run": index,
            "error": last.replace(str(ws.folder) + os.sep, ""), "checks": checks, "ok": all(c["ok"] for c in checks)}


def scenario_ctrl_c(ws: Workspace, index: int, rng: random.Random, real_signal: bool) -> dict:
    """Ctrl-C after a random step, in a process of its own (``Workspace.interrupted``; optionally a real SIGINT)."""
    from pemn_compress.checkpoints import checkpoint_path

    ws.reference()
    out = ws.folder / f"ctrlc{index}.pemn"
    ckpt = checkpoint_path(out)
    for stale in (out, ckpt):
        stale.unlink(missing_ok=True)
    step = rng.randrange(1, TOTAL_STEPS)
    result = ws.interrupted(step, real_signal, *COMPRESS_ARGS, "-o", out)
    checks: list = []
    last = (result.stderr.strip().splitlines() or [""])[-1]
    _check(checks, "exit code 130", result.returncode == 130, f"exit {result.returncode}")
    _check(checks, "one line: checkpoint saved, rerun with --resume",
           last == f"interrupted; checkpoint saved to {ckpt}; rerun with --resume", last)
    _check(checks, "no output written", not out.exists())
    _check(checks, "no temp file", not temp_leftovers(out), ", ".join(temp_leftovers(out)))
    saved = _checkpoint_loads(ckpt, checks) if ckpt.exists() else None
    _check(checks, "checkpoint at the interrupted step", saved == step, f"saved {saved}, interrupted after {step}")
    if ckpt.exists():
        _resume(ws, out, checks)
    return {"scenario": "ctrl-c" + (" (SIGINT)" if real_signal else " (hook)"), "run": index, "step": step,
            "checks": checks, "ok": all(c["ok"] for c in checks)}


def run_faults(ws: Workspace, repeats: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    results = []
    for i in range(repeats):
        for k in range(4):  # kills land at random points: more of them
            results.append(scenario_sigkill(ws, 4 * i + k, rng, with_previous=bool(k % 2)))
        results.append(scenario_disk_full(ws, i, everywhere=False))
        results.append(scenario_disk_full(ws, 100 + i, everywhere=True))
        results.append(scenario_ctrl_c(ws, 2 * i, rng, real_signal=False))
        results.append(scenario_ctrl_c(ws, 2 * i + 1, rng, real_signal=True))
    return results


def compress_repeat(ws: Workspace) -> dict:
    """The same ``pemn compress`` twice: in this process, then in a fresh interpreter; same bytes?"""
    first = ws.reference()
    ws.kill_window()
    fresh = ws.fresh_run
    return {"first": sha256(first), "second": fresh["sha256"], "bytes": len(first), "identical": fresh["identical"],
            "exit": fresh["exit"], "stderr": fresh["stderr"]}



def main(argv: list[str] | None = None) -> int:
    """The fault and determinism part of the reliability campaign, as JSON (see the module docstring)."""
    from support.determinism import determinism_matrix

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of every fault scenario")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill delays and interrupted steps")
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pemn-faults-") as tmp:
        ws = Workspace(Path(tmp) / "faults")
        faults = run_faults(ws, args.repeats, args.seed)
        print("determinism ...", file=sys.stderr, flush=True)
        matrix = determinism_matrix(Path(tmp) / "determinism")
        repeat = compress_repeat(ws)
    found = {"compress_args": COMPRESS_ARGS, "total_steps": TOTAL_STEPS, "faults": faults, "determinism": matrix,
             "compress_repeat": repeat}
    args.json.write_text(json.dumps(found, indent=1, default=str))
    return 0 if all(r["ok"] for r in faults) and matrix["ok"] and repeat["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
