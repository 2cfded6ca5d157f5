"""Smoke test of benchmarks/train_throughput.py run as a user types it: its --quick run (test_convmixer, a
few steps on real Fashion-MNIST batches) writes a CSV row per variant with a positive throughput and a
ratio that is the variant's median over dense's median (recomputed here from the CSV), and a Markdown
report that records its command line and lists every variant."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import run_script

from pemn_compress.data import FASHION_MNIST_DEBIAN_DIR

pytestmark = pytest.mark.skipif(
    not (Path(FASHION_MNIST_DEBIAN_DIR) / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)


def test_quick_run_reports_every_variant(tmp_path):
    run_script("benchmarks/train_throughput.py", "--quick", "--out", tmp_path)
    stem = tmp_path / "train_throughput_quick_cpu"
    with open(stem.with_suffix(".csv"), newline="") as fh:
        rows = {row["variant"]: row for row in csv.DictReader(fh)}
    assert list(rows)[0] == "dense" and {"mask", "onelayer", "mp", "rp 1e-3"} <= set(rows)
    dense_ips = float(rows["dense"]["images_per_sec"])
    for name, row in rows.items():
        ips = float(row["images_per_sec"])
        assert ips > 0, name
        assert float(row["ratio_to_dense"]) == pytest.approx(ips / dense_ips, rel=1e-4), name
        for phase in ("step", "forward", "backward", "optimizer"):
            assert float(row[f"{phase}_ms"]) > 0, (name, phase)
        if name == "dense":
            assert row["masked_layers"] == "0" and row["topk_ms"] == ""
        else:
            assert int(row["masked_layers"]) > 0 and float(row["topk_ms"]) > 0, name

    markdown = stem.with_suffix(".md").read_text()
    assert f"Command: `python benchmarks/train_throughput.py --quick --out {tmp_path}`" in markdown
    assert "## test_convmixer" in markdown and "target >= 0.95x" in markdown
    assert all(f"| {name} |" in markdown for name in rows)
