"""benchmarks/teacher_cache.py in its quick mode on real Fashion-MNIST images: both ways of distilling
train the same student (the report's loss difference is float noise) and the report has both rows."""

from __future__ import annotations

import re

import pytest
from conftest import load_benchmark

tc = load_benchmark("teacher_cache")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_quick_report_compares_the_two_teachers(tmp_path):
    path = tc.main(["--quick", "--out", str(tmp_path)])
    text = path.read_text()
    rows = re.findall(r"^\| (every step|cached once) \| (\d+\.\d) \|", text, flags=re.M)
    assert [r[0] for r in rows] == ["every step", "cached once"]
    drift = float(re.search(r"training losses: (\S+) ", text).group(1))
    assert drift < 1e-4  # the cached logits are the teacher's: the same training, to float noise
    assert "512 Fashion-MNIST training images" in text
