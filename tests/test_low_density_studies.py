"""The two studies behind issue 27's low-budget decisions, run on a trained file as a user runs them:
``benchmarks/mask_codecs.py --files`` (would a low-density mask code save 5% of the file?) and
``benchmarks/leftover_int8.py --files`` (what would int8 leftovers cost?). Expected bytes come from the
generic safetensors reader and expected accuracy from the file's own provenance, not from the scripts."""

from __future__ import annotations

import re

import pytest
from conftest import run_compress, run_script
from safetensors import safe_open

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def low_density_file(fmnist_cwd):
    run_compress("test_convmixer", "--data", "fashion-mnist", "--density", "0.1", "--epochs", "1",
                 "--max-train-samples", "256", "--threads", "1", "--quiet", "--output", "low.pemn")  # fmt: skip
    return fmnist_cwd / "low.pemn"


def tensor_bytes(path, name: str) -> int:
    with safe_open(str(path), "np") as f:
        return f.get_tensor(name).nbytes


def cells(line: str) -> list[str]:
    """The cells of one Markdown table row."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table_rows(report: str, first_cell: str) -> list[list[str]]:
    return [cells(line) for line in report.splitlines() if line.startswith(f"| {first_cell} |")]


def number(cell: str) -> int:
    return int(cell.replace(",", "").split()[0])


def test_mask_codes_are_measured_against_the_whole_file(low_density_file, tmp_path):
    run_script("benchmarks/mask_codecs.py", "--files", low_density_file, "--out", tmp_path)
    report = (tmp_path / "mask_codecs_files.md").read_text()
    row = table_rows(report, "low.pemn")[0]
    file_bytes, density, v1 = number(row[1]), float(row[2]), number(row[3])
    assert file_bytes == low_density_file.stat().st_size
    assert density == 0.1
    assert v1 == tensor_bytes(low_density_file, "masks")  # the writer's codes, as the file stores them
    coded = [number(c) for c in row[5:8]]  # group-rice, group-ac, ctx-ac, each with the writer's fallback
    assert all(size <= v1 for size in coded)
    assert number(row[8]) == v1 - min(coded)
    assert re.search(r"Largest saving of a whole file: \d+\.\d% \(low\.pemn\), bar 5%: \*\*(not )?met\*\*", report)


def test_int8_leftovers_are_measured_on_the_file_as_trained(low_density_file, tmp_path, fmnist_subset):
    out = tmp_path / "leftovers.md"
    run_script("benchmarks/leftover_int8.py", "--files", low_density_file, "--out", out,
               env={"PEMN_FASHION_MNIST_DIR": str(fmnist_subset)})  # fmt: skip
    report = out.read_text()
    rows = table_rows(report, "low")
    assert [row[1] for row in rows] == [
        "float16", "int8 symmetric", "int8 affine", "int8, blocks of 16", "int8 affine, outliers float16",
        "q8 as written, outliers <= 1 in 8", "q8 as written, outliers <= 1 in 32"]  # fmt: skip
    float16 = rows[0]
    assert number(float16[2]) == tensor_bytes(low_density_file, "dense.f16")
    assert number(float16[3]) == low_density_file.stat().st_size
    with safe_open(str(low_density_file), "np") as f:
        assert "dense.f32" not in f.keys()
    # the float16 row is the file as it is: the accuracy `pemn compress` measured on the same test images
    from pemn_compress import read_pemn

    recorded = read_pemn(low_density_file).header["provenance"]["accuracy"]
    assert float(float16[4]) == pytest.approx(100 * recorded, abs=0.005)
    for row in rows[1:]:  # int8: one byte per value plus the per-tensor or per-block scales (and outliers)
        assert number(row[2]) < number(float16[2])
        assert number(row[3]) - number(row[2]) == number(float16[3]) - number(float16[2])
