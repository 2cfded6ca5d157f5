"""Size/accuracy benchmark (benchmarks/size_accuracy.py) run as a user types it: its artifacts are real
files whose sizes the report states, their accuracy is that of the file loaded back, the pruning
baselines (pemn_compress.baselines) reach their sparsity on a zoo model, and the reports are rendered
from the CSV alone. Runs a few jobs of ``--quick`` on real Fashion-MNIST images."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from conftest import run_script

import pemn_compress as pemn
from pemn_compress.baselines import Pruning, load_artifact
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.nn.topk import kept_count
from pemn_compress.surgery import maskable_layers

README_BEGIN, README_END = "<!-- size_accuracy:begin -->", "<!-- size_accuracy:end -->"

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ONLY = r"^dense\||random pruning 96|magnitude pruning 94|rp 1e-3 \(paper|distillation|onelayer d0.1"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    work = out / "work"
    run_script("benchmarks/size_accuracy.py", "--quick", "--only", ONLY, "--out", out, "--work", work)
    stem = out / "size_accuracy_quick_fashion-mnist_test_convmixer_cpu"
    with open(stem.with_suffix(".csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    return stem, work, rows


def test_selected_jobs_and_storage_variants_are_rows(quick_run):
    _, _, rows = quick_run
    methods = {r["method"] for r in rows}
    assert {"dense fp32", "dense fp16", "int8 weight-only", "random pruning 96%", "magnitude pruning 94%",
            "rp 1e-3 (paper setting)", "+ fp16 leftovers", "+ BN folded", "+ distillation", "onelayer d0.1"} == methods
    assert all(r["seed"] == "0" for r in rows)
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)


def test_every_reported_size_is_a_file_on_disk(quick_run):
    _, work, rows = quick_run
    files = [f for f in work.iterdir() if f.name != "reference_fp32.safetensors"]
    assert sorted(os.path.getsize(f) for f in files) == sorted(int(r["bytes"]) for r in rows)
    reference = os.path.getsize(work / "reference_fp32.safetensors")
    by_method = {r["method"]: int(r["bytes"]) for r in rows}
    assert by_method["dense fp32"] == reference
    ratio = {r["method"]: float(r["ratio_vs_fp32"]) for r in rows}
    assert ratio["dense fp32"] == 1.0  # the reference against itself
    # fp16 halves the floating data D and keeps about the JSON header H (same keys, "F16" as long as
    # "F32", offsets no longer): (H + D) / (H' + D / 2) with H / 2 < H' <= H lies strictly in (1, 2)
    assert 1.0 < ratio["dense fp16"] < 2.0
    for r in rows:  # every ratio is against the reference file on disk: ratio x own size = its size
        assert float(r["ratio_vs_fp32"]) * int(r["bytes"]) == pytest.approx(reference, rel=1e-5), r["method"]
    pemn_rows = [r for r in rows if r["artifact"].startswith(".pemn")]
    assert pemn_rows
    assert all(float(r["paper_ratio"]) > 1 and float(r["bound_bytes"]) < int(r["bytes"]) for r in pemn_rows)
    assert all(r["paper_ratio"] == "" for r in rows if not r["artifact"].startswith(".pemn"))
    assert by_method["dense fp16"] < by_method["dense fp32"]
    assert by_method["+ fp16 leftovers"] < by_method["rp 1e-3 (paper setting)"]
    assert by_method["+ BN folded"] < by_method["rp 1e-3 (paper setting)"]


def test_reported_accuracy_is_the_accuracy_of_the_loaded_file(quick_run):
    _, work, rows = quick_run
    data = get_dataset("fashion-mnist").subset(2000, 1000, seed=0)  # --quick: 2,000 training, 1,000 test images
    test = BatchLoader.from_dataset(data, "test", batch_size=1000)
    row = next(r for r in rows if r["method"] == "magnitude pruning 94%")
    artifact = work / "magnitude_pruning_magnitude_pruning_94_0.safetensors"
    model = load_artifact("sparse", artifact, lambda: pemn.create_model("test_convmixer", in_chans=1, num_classes=10))
    _, acc = pemn.evaluate(model, test)
    assert acc == pytest.approx(float(row["accuracy"]), abs=1e-6)
    for _, layer in maskable_layers(model):
        n = layer.weight.numel()
        assert int((layer.weight != 0).sum()) == kept_count(0.06, n)  # the spec's count, every value non-zero
    path = work / "pemn_reference_rp_1e_3_paper_setting_0_fp16_leftovers.pemn"
    row = next(r for r in rows if r["method"] == "+ fp16 leftovers")
    _, acc = pemn.evaluate(pemn.load(path, device="cpu"), test)
    assert acc == pytest.approx(float(row["accuracy"]), abs=1e-6) and int(row["bytes"]) == os.path.getsize(path)


def test_reports_rendered_from_the_csv(quick_run, tmp_path):
    stem, _, rows = quick_run
    md = stem.with_suffix(".md").read_text()
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert f"Command: `{meta['command']}`" in md and "--quick" in meta["command"]
    assert md.count("\n| ") == len({(r["group"], r["method"], r["artifact"]) for r in rows}) + 1  # + header row
    assert "Best PEMN accuracy at >= 25x" in md or "No PEMN file reaches 25x" in md
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stem.with_suffix(".md").unlink()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{README_BEGIN}\nstale numbers\n{README_END}\n\nafter\n")
    run_script("benchmarks/size_accuracy.py", "--render", stem.with_suffix(".csv"), "--readme", readme)
    assert stem.with_suffix(".md").read_text() == md
    text = readme.read_text()
    assert text.startswith("intro\n\n" + README_BEGIN) and text.endswith(README_END + "\n\nafter\n")
    assert "stale numbers" not in text and f"({stem.with_suffix('.png').as_posix()})" in text
    dense = next(r for r in rows if r["method"] == "dense fp32")
    assert (f"| dense fp32 | safetensors fp32 | {int(dense['bytes']):,} | 1.0x | "
            f"{100 * float(dense['accuracy']):.2f} | 0.00 |") in text  # fmt: skip
    readme.write_text("no markers\n")
    result = run_script("benchmarks/size_accuracy.py", "--render", stem.with_suffix(".csv"), "--readme", readme,
                        expect=1)  # fmt: skip
    assert "has no <!-- size_accuracy:begin --> ... <!-- size_accuracy:end --> block" in result.stderr


class FakeTrainer:
    """The two attributes the pruning callback reads from a Trainer."""

    def __init__(self, total_steps: int):
        self.total_steps, self.step = total_steps, 0


def started_pruning(how: str, total_steps: int, seed: int):
    torch.manual_seed(0)
    model = pemn.create_model("test_convmixer")
    pruning, trainer = Pruning(model, how, 0.9, seed=seed), FakeTrainer(total_steps)
    pruning.on_fit_start(trainer)
    return model, pruning, trainer


def test_random_pruning_keeps_a_fixed_random_mask():
    model, pruning, trainer = started_pruning("random", 10, seed=3)
    before = [m.clone() for m in pruning.masks]
    with torch.no_grad():
        for _, layer in maskable_layers(model):
            layer.weight.add_(1.0)  # an optimizer step that revives every pruned weight
    trainer.step = 1
    pruning.on_batch_end(trainer, 0, 0.0, 0, 1)
    # Pruning keeps one mask per maskable layer; `before` copies those masks
    for (_, layer), mask, old in zip(maskable_layers(model), pruning.masks, before, strict=True):
        assert torch.equal(mask, old)
        assert int((layer.weight != 0).sum()) == kept_count(0.1, layer.weight.numel())


def test_magnitude_pruning_reaches_its_sparsity_and_keeps_the_largest_weights():
    model, pruning, trainer = started_pruning("magnitude", 40, seed=0)
    sparsities = []
    for step in range(1, 41):
        trainer.step = step
        pruning.on_batch_end(trainer, step, 0.0, 0, 1)
        sparsities.append(sum(int((~m).sum()) for m in pruning.masks) / sum(m.numel() for m in pruning.masks))
    assert sparsities == sorted(sparsities) and sparsities[0] < 0.5
    assert sparsities[-1] == pytest.approx(0.9, abs=0.02)
    for (_, layer), mask in zip(maskable_layers(model), pruning.masks, strict=True):  # one mask per maskable layer
        w = layer.weight.detach().abs()
        if mask.all() or not mask.any():
            continue
        assert w[mask].min() >= w[~mask].max()
