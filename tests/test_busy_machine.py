"""A busy machine is not oversubscribed: `pemn compress` without --threads trains on the cores other programs
leave free, and says so, pointing at --threads (a new user's run went 24x slower with one core busy elsewhere).

Runs `pemn compress` as a user types it, in a process of its own (torch's default thread count, not the
one-thread setting of the other test modules), while a second process keeps one core busy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


def test_a_busy_core_lowers_the_threads_and_the_run_says_so(fmnist_cwd):
    probe = "import torch; print(torch.get_num_threads())"
    default_threads = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                         check=True, timeout=120).stdout)
    if default_threads < 2:
        pytest.skip("torch uses one thread here: there is nothing to lower")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core kept busy
    try:
        time.sleep(0.5)
        proc = subprocess.run(
            [sys.executable, "-m", "pemn_compress", "compress", "test_mlp", "--max-train-samples", "128",
             "--epochs", "1", "--batch-size", "64"],
            capture_output=True, text=True, timeout=300, env=dict(os.environ, COLUMNS="200"),
        )
    finally:
        burner.kill()
        burner.wait()
    assert proc.returncode == 0, proc.stderr[-2000:]
    note = [line for line in proc.stderr.splitlines() if "the machine is busy" in line]
    assert note and "--threads N" in note[0], proc.stderr[-2000:]
    threads = int(note[0].split("training on ")[1].split(" thread")[0])
    assert 1 <= threads < default_threads
