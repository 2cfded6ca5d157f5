"""`pemn compress` as a user types it: BatchNorm folded by default, and --target-size / --target-ratio
(the file on disk never over the budget, the density printed, errors in one line before training)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner
from conftest import run_compress, run_script
from support.faults import InterruptAfterSteps

import pemn_compress as pemn
from pemn_compress.budget import parse_size
from pemn_compress.commands import eval_command
from pemn_compress.config import DEFAULT_DENSITY
from pemn_compress.errors import ConfigError, ModelError
from pemn_compress.pipeline import CompressOptions, TrainingInterrupted
from pemn_compress.pipeline import compress as compress_api
from pemn_compress.surgery import set_density_

QUICK = ["--max-train-samples", "256", "--epochs", "1", "--batch-size", "64", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def env(fmnist_cwd):
    return fmnist_cwd


run = run_compress


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and sum("error" in line for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def batchnorm_channels(name: str) -> int:
    """Channels of every BatchNorm of the zoo model, counted from the module itself."""
    model = pemn.create_model(name)
    return sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


# ------------------------------------------------------------------------------------------------ folding


def test_batchnorm_is_folded_by_default_and_kept_on_request(env):
    folded = json.loads(run("test_convmixer", *QUICK, "-o", "folded.pemn", "--json").stdout)
    plain = json.loads(run("test_convmixer", *QUICK, "-o", "plain.pemn", "--no-fold-batchnorm", "--json").stdout)
    a, b = pemn.read_pemn(env / "folded.pemn"), pemn.read_pemn(env / "plain.pemn")
    assert len(a.header["dense"]["folded_batchnorm"]) == 5 and b.header["dense"]["folded_batchnorm"] == []
    assert a.header["provenance"]["recipe"]["fold_batchnorm"] is True
    assert b.header["provenance"]["recipe"]["fold_batchnorm"] is False
    # two running statistics per channel in fp16 are not stored: 4 bytes per channel fewer
    assert b.tensor_bytes("dense.") - a.tensor_bytes("dense.") == 4 * batchnorm_channels("test_convmixer") == 320
    assert os.path.getsize(env / "folded.pemn") < os.path.getsize(env / "plain.pemn")
    assert folded["file_bytes"] == os.path.getsize(env / "folded.pemn")
    assert plain["file_bytes"] == os.path.getsize(env / "plain.pemn")

    # the accuracy reported is the folded file's, as pemn eval measures it
    report = json.loads(CliRunner().invoke(eval_command, [str(env / "folded.pemn"), "--json"]).stdout)
    assert report["accuracy"] == report["recorded_accuracy"] == folded["accuracy"]

    with pytest.raises(ModelError, match=r"--no-fold-batchnorm \(pemn.save\(\.\.\., fold_batchnorm=False\)\)"):
        pemn.load(env / "folded.pemn", device="cpu", masked=True)
    assert pemn.load(env / "plain.pemn", device="cpu", masked=True) is not None


def test_resume_compares_fold_batchnorm(env):
    options = dict(model="test_mlp", max_train_samples=256, epochs=2, batch_size=64, threads=1, output="out.pemn")
    with pytest.raises(TrainingInterrupted):
        compress_api(CompressOptions(**options, checkpoint_every=3), callbacks=[InterruptAfterSteps(5)])
    state = torch.load(env / "out.pemn.ckpt", weights_only=True)
    assert state["recipe"]["fold_batchnorm"] is True
    assert any(k.endswith("running_var") for k in state["trainer"]["model"])  # the checkpoint stays unfolded
    changed = run("test_mlp", "--max-train-samples", "256", "--epochs", "2", "--batch-size", "64", "--threads", "1",
                  "-o", "out.pemn", "--resume", "--no-fold-batchnorm", expect=None)
    one_line_error(changed, "other settings", "fold_batchnorm True -> False")


# ------------------------------------------------------------------------------------------------ budgets


@pytest.mark.parametrize(("model", "budgets"), [
    ("test_convmixer", ["4600", "4.7KB", "5KiB"]),
    ("test_mlp", ["3.3KB", "4KiB", "5000", "1MB"]),
])  # fmt: skip
def test_target_size_as_typed_is_never_exceeded(env, model, budgets):
    for i, typed in enumerate(budgets):
        result = run(model, *QUICK, "--target-size", typed, "-o", f"t{i}.pemn")
        budget = parse_size(typed)
        size = os.path.getsize(env / f"t{i}.pemn")
        assert size <= budget, (typed, size)
        prov = pemn.read_pemn(env / f"t{i}.pemn").header["provenance"]
        density = pemn.read_pemn(env / f"t{i}.pemn").header["config"]["density"]
        assert prov["target"] == {"budget_bytes": budget, "target_size": budget, "target_ratio": None,
                                  "density": density}
        assert prov["recipe"]["target_size"] == budget
        assert f"target {budget:,} B: density {density:g} (masks <= " in result.stderr
        assert f"density {density:g} (target {budget:,} B)" in result.stdout


def test_target_ratio_json(env):
    doc = json.loads(run("test_mlp", *QUICK, "--target-ratio", "30", "--json").stdout)
    target = doc["target"]
    assert target["budget_bytes"] == doc["dense_fp32_bytes"] // 30 and target["target_ratio"] == 30
    assert doc["file_bytes"] == os.path.getsize(env / "test_mlp.pemn") <= target["budget_bytes"]
    assert target["file_bytes_bound"] <= target["budget_bytes"] and doc["ratio"] >= 30
    assert target["masks_bytes_bound"] + target["leftover_bytes"] + target["header_bytes_bound"] == \
        target["file_bytes_bound"]


def test_a_trained_file_over_the_estimate_is_made_to_fit_before_writing(env, monkeypatch):
    # an estimate of the deflated header 1,500 B too optimistic: the density chosen (the default) is too high
    monkeypatch.setattr("pemn_compress.budget.header_margin", lambda deflated: -1500)
    run("test_convmixer", *QUICK, "-o", "plain.pemn")
    plain = os.path.getsize(env / "plain.pemn")

    # 10 B over: leaving the recipe out of the provenance is enough, the density stays
    result = run("test_convmixer", *QUICK, "--target-size", str(plain - 10), "-o", "a.pemn")
    a = pemn.read_pemn(env / "a.pemn")
    assert os.path.getsize(env / "a.pemn") <= plain - 10 and a.header["config"]["density"] == DEFAULT_DENSITY
    assert "over the budget: the recipe is left out of its provenance" in result.stderr
    assert "recipe" not in a.header["provenance"] and "density lowered" not in result.stderr

    # over even without the recipe: the density is lowered, the lowest-score weights dropped
    budget = os.path.getsize(env / "a.pemn") - 10
    result = run("test_convmixer", *QUICK, "--target-size", str(budget), "-o", "b.pemn")
    assert os.path.getsize(env / "b.pemn") <= budget
    b = pemn.read_pemn(env / "b.pemn")
    final = b.header["config"]["density"]
    assert f"target {budget:,} B: density {DEFAULT_DENSITY:g} (" in result.stderr  # chosen before training
    assert f"density lowered from {DEFAULT_DENSITY:g} to {final:g}" in result.stderr and final < DEFAULT_DENSITY
    assert "recipe" not in b.header["provenance"] and b.header["provenance"]["target"]["density"] == final
    masks_a, masks_b = (pemn.fileformat.reader.decode_masks(f) for f in (a, b))
    for name, mask in masks_b.items():  # test_convmixer's layers: 256, 144, 256, 144, 256 and 160 weights
        assert int(mask.sum()) == max(1, int(final * mask.size + 0.5))
        assert not (mask & ~masks_a[name]).any()  # same training, so a subset of the unfitted masks
    # the accuracy reported and recorded is the fitted file's own, as pemn eval measures it
    report = json.loads(CliRunner().invoke(eval_command, [str(env / "b.pemn"), "--json"]).stdout)
    assert report["accuracy"] == report["recorded_accuracy"]
    assert f"accuracy {report['accuracy']:.4f}" in result.stderr


def test_set_density_keeps_a_subset_of_the_mask(env):
    model = pemn.mask_(pemn.create_model("test_mlp"), pemn.MaskConfig(density=0.5, seed=4))
    before = {name: layer.mask().clone() for name, layer in pemn.masked_layers(model)}
    set_density_(model, 0.2)
    assert pemn.surgery.config_of(model).density == 0.2
    for name, layer in pemn.masked_layers(model):
        after = layer.mask()
        assert int(after.sum()) == max(1, int(0.2 * after.numel() + 0.5))
        assert not (after & ~before[name]).any()  # nothing kept that was not kept before
    with pytest.raises(ConfigError, match="density"):
        set_density_(model, 0.0)


def test_unreachable_budget_stops_before_training(env, monkeypatch):
    def no_training(self):
        raise AssertionError("training started")

    monkeypatch.setattr("pemn_compress.pipeline.Trainer.fit", no_training)
    result = run("test_convmixer", *QUICK, "--target-size", "1KB", expect=None)
    one_line_error(result, "--target-size 1,000 B is below the smallest file this model can make",
                   "the leftovers take 320 B")
    assert sorted(os.listdir(env)) == []  # no checkpoint, no output file


@pytest.mark.parametrize(("args", "fragment"), [
    (["--density", "0.3", "--target-size", "40KB"], "--density and --target-size are mutually exclusive"),
    (["--density", "0.5", "--target-ratio", "4"], "--density and --target-ratio are mutually exclusive"),
    (["--target-size", "40KB", "--target-ratio", "4"], "--target-size and --target-ratio are mutually exclusive"),
    (["--target-size", "40 kilobytes"], "--target-size must be a size in bytes such as 40000, 40KB"),
    (["--target-ratio", "0"], "--target-ratio must be a number in (0.0, inf)"),
])  # fmt: skip
def test_target_errors_are_one_line(env, args, fragment):
    one_line_error(run("test_mlp", *QUICK, *args, expect=None), fragment)
    assert sorted(os.listdir(env)) == []


def test_benchmark_script_writes_no_file_over_budget(env):
    """benchmarks/target_size.py as typed: every file it reports is on disk, its size the table's, within its
    budget (os.path.getsize against the budget column, not the script's own summary line)."""
    out, work = env / "target_size.md", env / "work"
    run_script("benchmarks/target_size.py", "--models", "test_mlp", "--budgets", "2", "--train-samples", "128",
               "--test-samples", "100", "--out", out, "--work", work)  # fmt: skip
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| test_mlp |")]
    assert len(rows) == 2
    for cells in rows:
        budget, size = (int(cells[i].strip().replace(",", "")) for i in (1, 4))
        path = work / f"test_mlp_b{budget}.pemn"
        assert os.path.getsize(path) == size <= budget
        assert pemn.read_pemn(path).header["provenance"]["target"]["budget_bytes"] == budget
