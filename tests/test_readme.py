"""The README's Python snippets run as written (on a real Fashion-MNIST subset)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_two_commands_ci_runs():
    lines = README.read_text().splitlines()
    commands = [line.strip() for line in lines[:4] if line.startswith("    ")]
    assert len(commands) == 2
    assert commands[1] in (README.parent / ".ci" / "run").read_text()  # CI runs the README's test command


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    library = [b for b in blocks if "mask_(" in b]
    deployment = [b for b in blocks if 'pemn.load("model.pemn"' in b]
    assert library and deployment and len(library) + len(deployment) == len(blocks)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for block in library:
            exec(compile(block, "README.md", "exec"), {})
        shutil.copy("tiny.pemn", "model.pemn")
        for block in deployment:
            namespace: dict = {}
            exec(compile(block, "README.md", "exec"), namespace)
            assert not namespace["model"].training
    finally:
        torch.set_num_threads(threads)


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
