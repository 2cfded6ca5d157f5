"""The README's first lines: the two commands CI runs, and the quickstart they start.

Every code block of README.md and docs/*.md is run by tests/test_docs.py."""

from __future__ import annotations

from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands_ci_runs():
    lines = README.read_text().splitlines()
    commands = [line.strip() for line in lines[:4] if line.startswith("    ")]
    assert len(commands) == 2
    assert commands[1] in (README.parent / ".ci" / "run").read_text()  # CI runs the README's test command


def test_quickstart_runs_and_records_the_accuracy_of_its_file(tmp_path):
    """The README's first command runs examples/quickstart.py: it must exit 0, print the size of the file it
    leaves on disk, and the accuracy it records in the file must be the one the loaded file reaches (checked
    independently with pemn eval)."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "q.pemn"
    script = README.parent / "examples" / "quickstart.py"
    args = ["--model", "test_convmixer", "--epochs", "1", "--train-samples", "500", "--threads", "1", "--out", str(out)]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed_bytes = int(proc.stdout.split(f"{out}: ")[1].split(" bytes on disk")[0].replace(",", ""))
    assert printed_bytes == os.path.getsize(out)
    printed = float(proc.stdout.split("loaded back on")[1].split("accuracy ")[1].split()[0])
    doc = subprocess.run([sys.executable, "-m", "pemn_compress", "eval", str(out), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert doc.returncode == 0, doc.stderr[-2000:]
    result = json.loads(doc.stdout)
    assert result["accuracy"] == pytest.approx(printed, abs=5e-5)  # printed to 4 decimals
    assert result["recorded_accuracy"] == pytest.approx(result["accuracy"], abs=1e-12)
    # the file is what `pemn compress` writes: BatchNorm folded (the quickstart once wrote a 70% larger file)
    inspected = json.loads(subprocess.run([sys.executable, "-m", "pemn_compress", "inspect", str(out), "--json"],
                                          capture_output=True, text=True, timeout=120, check=True).stdout)
    assert inspected["dense"]["folded_batchnorm"] and inspected["dense"]["dtype"] == "float16"
