"""benchmarks/load_speed.py as a user runs it: the smallest size, profiled, one load each."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_load_speed_reports_verdicts_and_the_profile(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/load_speed.py", "--sizes", "1m", "--repeats", "1", "--profile", "1m",
         "--generator-values", "65536", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    report = (tmp_path / "load_speed_cpu.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| linear_stack 512x4 "))
    # 1M parameters is under the 10M the ratio and memory targets start at; the profiled size has a weights/s target
    assert row.rstrip(" |").split(" | ")[-3:] != ["-", "-", "-"]
    assert row.split(" | ")[-3] == "-" and row.split(" | ")[-1].rstrip(" |") == "-"
    assert re.fullmatch(r"met|missed by \d+%", row.split(" | ")[-2])
    phases = dict(re.findall(r"^\| (.+?) \| (\d+) \|$", report.split("milliseconds go")[1], flags=re.M))
    assert {"read: file bytes, header, data checksum", "stream weights (wall)", "pemn.load (wall)"} <= set(phases)
    assert int(phases["stream weights (wall)"]) <= int(phases["pemn.load (wall)"])
    # the stream is the SHA-256 of every weight and more: it cannot take less than hashing alone
    assert int(phases["  main thread: SHA-256 fingerprint"]) <= int(phases["stream weights (wall)"]) + 1
    assert "milliseconds go" in out
