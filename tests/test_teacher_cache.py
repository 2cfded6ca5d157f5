"""benchmarks/teacher_cache.py run as a user types it, in its quick mode on real Fashion-MNIST images: both
ways of distilling train the same student (the report's loss difference is float noise) and the report
has both rows."""

from __future__ import annotations

import re

from conftest import run_script


def test_quick_report_compares_the_two_teachers(tmp_path):
    run_script("benchmarks/teacher_cache.py", "--quick", "--out", tmp_path)
    text = (tmp_path / "teacher_cache_quick_cpu.md").read_text()
    rows = re.findall(r"^\| (every step|cached once) \| (\d+\.\d) \|", text, flags=re.M)
    assert [r[0] for r in rows] == ["every step", "cached once"]
    drift = float(re.search(r"training losses: (\S+) ", text).group(1))
    assert drift < 1e-4  # the cached logits are the teacher's: the same training, to float noise
    assert "512 Fashion-MNIST training images" in text
