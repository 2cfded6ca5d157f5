"""Full-data report (benchmarks/frontier.py) in its quick mode on a real Fashion-MNIST subset: every row
is a real file whose accuracy is that of the file loaded back (checked here with the package's loader
and, for the dense formats, safetensors and arithmetic written in the test), --resume adds nothing to a
finished run, and the rendered goals are the paired gaps recomputed here from the raw CSV."""

from __future__ import annotations

import re
import statistics

import pytest
import torch
from conftest import load_benchmark, read_csv, run_main
from safetensors.torch import load_file

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset

fr = load_benchmark("frontier")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAME = "frontier_quick_fashion-mnist_test_convmixer_cpu"


def run(args: list[str]) -> str:
    return run_main(fr, args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Seeds 0 and 1 only (seed 0's single-seed rows included), then --resume for the rest, then once more."""
    out = tmp_path_factory.mktemp("results")
    args = ["--quick", "--out", str(out), "--work", str(out / "work")]
    run(args + ["--only", r"\|[01]$"])
    first = read_csv(out / f"{NAME}.csv")
    run(args + ["--resume"])
    second = read_csv(out / f"{NAME}.csv")
    log = run(args + ["--resume"])
    return out, first, second, read_csv(out / f"{NAME}.csv"), log


def test_resume_runs_each_job_once(runs):
    _, first, second, third, log = runs
    assert {r["seed"] for r in first} == {"0", "1"}
    assert second[: len(first)] == first and third == second
    assert "0 jobs" in log
    jobs = [(r["job"], r["method"]) for r in second]
    assert len(jobs) == len(set(jobs))
    seeds = {m: {x["seed"] for x in second if x["method"] == m} for m in {r["method"] for r in second}}
    headline = {m for m, s in seeds.items() if s == {"0", "1", "2"}}
    assert headline == {"dense fp32", "dense fp16", "int8 weight-only", "defaults", "--density 0.5",
                        "defaults + density annealing", "defaults + augmentation", "--target-ratio 2",
                        "--target-ratio 2 + density annealing",
                        "--target-ratio 2 + global allocation"}  # fmt: skip
    single = {r["method"] for r in second} - headline
    assert single == {"magnitude pruning 98%", "magnitude pruning 99%", "random pruning 98%", "previous defaults"}


def quick_test_set(out):
    data = get_dataset(str(next((out / "work").glob("fashion-mnist_*.npz"))))
    assert (data.num_train, data.num_test) == (300, 500)
    return data, BatchLoader.from_dataset(data, "test", batch_size=500)


def test_rows_are_files_loaded_back(runs):
    out, _, rows, _, _ = runs
    work = out / "work"
    data, test = quick_test_set(out)
    row = {(r["method"], int(r["seed"])): r for r in rows}
    # a .pemn row: pemn.load, the file's size, the density recorded in its header
    pemn_row = row[("--target-ratio 2", 1)]
    path = work / "e1_target_ratio_2_s1.pemn"
    _, accuracy = pemn.evaluate(pemn.load(path, device="cpu"), test)
    assert accuracy == pytest.approx(float(pemn_row["accuracy"]), abs=1e-9)
    assert int(pemn_row["bytes"]) == path.stat().st_size
    ratio = int(row[("dense fp32", 1)]["bytes"]) / path.stat().st_size
    assert float(pemn_row["ratio"]) == pytest.approx(ratio, rel=5e-6)  # the CSV keeps 6 significant digits
    assert pemn.read_pemn(path).header["provenance"]["recipe"]["target_ratio"] == 2.0
    # the dense int8 file, dequantized here: q * per-channel scale
    stored = load_file(work / "dense_e1_s2_int8.safetensors")
    model = pemn.create_model("test_convmixer", in_chans=1, num_classes=10, img_size=28)
    state = model.state_dict()
    for key in [k[: -len(".int8")] for k in stored if k.endswith(".int8")]:
        q, scale = stored.pop(key + ".int8"), stored.pop(key + ".scale")
        assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
        stored[key] = q.float() * scale.view(-1, *[1] * (q.ndim - 1))
    for key, value in state.items():
        stored.setdefault(key, value)  # BatchNorm step counters are not stored
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in stored.items()})
    _, accuracy = pemn.evaluate(model.eval(), test)
    assert accuracy == pytest.approx(float(row[("int8 weight-only", 2)]["accuracy"]), abs=1e-9)
    # the dense fp32 file is the trained model, bit for bit what the fp16 row rounds
    fp32, fp16 = (load_file(work / f"dense_e1_s0_{s}.safetensors") for s in ("fp32", "fp16"))
    assert all(torch.equal(fp32[k].half(), fp16[k]) for k in fp32 if fp32[k].is_floating_point())


def test_pruning_rows_keep_their_fraction(runs):
    """A pruned file's conv/linear weights: exactly the kept count of the stated sparsity is non-zero."""
    out, _, rows, _, _ = runs
    sa = fr._script("size_accuracy")
    path = out / "work" / "e1_magnitude_pruning_99_s0.safetensors"
    model = sa.load_artifact("sparse", path, lambda: pemn.create_model("test_convmixer", in_chans=1, num_classes=10))
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            n = module.weight.numel()
            assert int((module.weight != 0).sum()) <= max(1, round(0.01 * n) + 1), name
    row = next(r for r in rows if r["method"] == "magnitude pruning 99%")
    assert float(row["density"]) == pytest.approx(0.01)


def test_goals_are_the_paired_gaps_of_the_rows(runs, tmp_path):
    out, _, rows, _, _ = runs
    csv_path = out / f"{NAME}.csv"
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{fr.README_BEGIN}\nold text\n{fr.README_END}\nafter\n")
    run(["--render", str(csv_path), "--readme", str(readme)])
    markdown = csv_path.with_suffix(".md").read_text()
    acc = {(r["method"], int(r["seed"])): 100 * float(r["accuracy"]) for r in rows}
    for method, bar in (("defaults", 1.0), ("--target-ratio 2", 2.5), ("--density 0.5", 1.0)):
        gaps = [acc[("dense fp32", s)] - acc[(method, s)] for s in (0, 1, 2)]
        line = next(x for x in markdown.splitlines() if x.startswith(f"- `{method}`"))
        size, side = re.search(r": (\d+\.\d+) points (below|above) dense fp32", line).groups()
        found = float(size) if side == "below" else -float(size)
        assert found == pytest.approx(statistics.fmean(gaps), abs=0.005 + 1e-9)
        gap = statistics.fmean(gaps)
        assert ("**met**" in line.split(";")[0]) == (gap <= bar)
    for line, method, changed, kept in (("Default density schedule", "defaults + density annealing", "anneal",
                                         "constant"), ("Default augmentation", "defaults + augmentation", "on", "off")):
        wins = [acc[(method, s)] > acc[("defaults", s)] for s in (0, 1, 2)]
        decided = re.search(rf"^{line}: \*\*(\w+)\*\*", markdown, flags=re.M).group(1)
        assert decided == (changed if all(wins) else kept)
    text = readme.read_text()
    assert "old text" not in text and text.startswith("# title\n\nbefore\n") and text.endswith("after\n")
    assert "| dense fp32 |" in text and "Goals" in text
    with pytest.raises(SystemExit, match="has no <!-- frontier:begin"):
        readme.write_text("# no block\n")
        run(["--render", str(csv_path), "--readme", str(readme)])


def test_workers_split_the_plan(tmp_path):
    """``--worker I/N`` gives each of N processes a disjoint share of the jobs; together, all of them."""
    args = ["--quick", "--dry-run", "--out", str(tmp_path), "--work", str(tmp_path / "work")]
    everything = set(re.findall(r"^(\S.*?\|\d)\s", run(args), flags=re.M))
    shares = [set(re.findall(r"^(\S.*?\|\d)\s", run(args + ["--worker", f"{i}/2"]), flags=re.M)) for i in (0, 1)]
    assert len(everything) == 28 and shares[0] | shares[1] == everything and not shares[0] & shares[1]
    assert shares[0] and shares[1]
    with pytest.raises(SystemExit):
        fr.parse_args(["--worker", "2/2"])


@pytest.mark.parametrize("method,base,stem,recipe", [
    ("--target-ratio 2 + density annealing", "--target-ratio 2", "target_ratio_2_density_annealing",
     {"density_schedule": "anneal"}),
    ("defaults + density annealing", "defaults", "defaults_density_annealing", {"density_schedule": "anneal"}),
    ("defaults + augmentation", "defaults", "defaults_augmentation", {"augment": True, "density_schedule": "constant"}),
])  # fmt: skip
def test_a_method_measured_alone_is_paired_against_its_base_row(runs, method, base, stem, recipe):
    """The beyond-the-paper line: per-seed differences to the row without the method, from the raw CSV."""
    out, _, rows, _, _ = runs
    markdown = (out / f"{NAME}.md").read_text()
    acc = {(r["method"], int(r["seed"])): 100 * float(r["accuracy"]) for r in rows}
    line = next(x for x in markdown.splitlines() if x.startswith(f"- {method} against {base}:"))
    found = {int(s): float(d) for s, d in re.findall(r"s(\d) ([+-]\d+\.\d+)", line)}
    expected = {s: acc[(method, s)] - acc[(base, s)] for s in (0, 1, 2)}
    assert found == pytest.approx(expected, abs=0.005 + 1e-9)
    # the file was trained with the method (its recipe says so) and written at the density of its row
    header = pemn.read_pemn(out / "work" / f"e1_{stem}_s0.pemn").header
    assert {k: header["provenance"]["recipe"][k] for k in recipe} == recipe
    assert header["config"]["density"] == float(next(r["density"] for r in rows if r["job"] == f"{method}|0"))


def test_global_allocation_is_paired_and_its_file_is_allocated_across_layers(runs):
    out, _, rows, _, _ = runs
    markdown = (out / f"{NAME}.md").read_text()
    line = "- --target-ratio 2 + global allocation against --target-ratio 2:"
    assert any(x.startswith(line) for x in markdown.splitlines())
    pf = pemn.read_pemn(out / "work" / "e1_target_ratio_2_global_allocation_s0.pemn")
    density = pf.header["config"]["density"]
    kept = [layer.kept for layer in pf.layers]
    uniform = [max(1, int(density * layer.numel + 0.5)) for layer in pf.layers]  # the spec's per-layer count
    assert kept != uniform and sum(kept) == sum(uniform)  # moved between layers, as many in all


COMMITTED = fr.RESULTS / "frontier_fashion-mnist_convmixer_192_6_p4_cpu"


def test_code_defaults_to_the_density_the_committed_report_decides():
    """The default density of `pemn compress` (options and CLI), MaskConfig and the budget's cap is the
    committed full-data report's "Default density", and that decision follows from the committed rows:
    gaps to dense fp32 and ratios recomputed here, per seed, from the raw CSV."""
    from pemn_compress.budget import DEFAULT_DENSITY
    from pemn_compress.commands import compress as compress_command
    from pemn_compress.options import CompressOptions

    markdown = COMMITTED.with_suffix(".md").read_text()
    decided = float(re.search(r"^Default density: \*\*([\d.]+)\*\*", markdown, flags=re.M).group(1))
    rows = read_csv(COMMITTED.with_suffix(".csv"))
    acc = {(r["method"], int(r["seed"])): 100 * float(r["accuracy"]) for r in rows}
    seeds = sorted(s for m, s in acc if m == "dense fp32")
    assert len(seeds) >= 3
    by_density: dict[float, list[dict]] = {}
    for r in rows:
        if r["method"] == "defaults" or re.fullmatch(r"--density [\d.]+", r["method"]):
            by_density.setdefault(float(r["density"]), []).append(r)
    assert len(by_density) >= 2  # the defaults and at least one other density
    meeting = {}
    for density, rs in by_density.items():
        assert sorted(int(r["seed"]) for r in rs) == seeds, density
        accuracy = statistics.fmean(acc[(rs[0]["method"], s)] for s in seeds)
        gap = statistics.fmean(acc[("dense fp32", s)] for s in seeds) - accuracy
        if gap <= 1.0 and statistics.fmean(float(r["ratio"]) for r in rs) >= 25.0:
            meeting[density] = accuracy
    assert meeting and decided == max(meeting, key=lambda d: meeting[d])
    assert float(next(r["density"] for r in rows if r["method"] == "defaults")) == decided  # the rows ran at it
    cli = {p.name: p.default for p in compress_command.params}
    assert CompressOptions(model="convmixer_192_6_p4").density == cli["density"] == decided
    assert pemn.MaskConfig().density == DEFAULT_DENSITY == decided


@pytest.mark.parametrize("option,line,method,changed,kept", [
    ("density_schedule", "Default density schedule", "defaults + density annealing", "anneal", "constant"),
    ("augment", "Default augmentation", "defaults + augmentation", True, False),
])  # fmt: skip
def test_code_defaults_to_what_one_row_of_the_committed_report_decides(option, line, method, changed, kept):
    """An option changes from the defaults only if the row that changes it alone beat the defaults on
    every seed (paired, recomputed here from the raw CSV); the CLI and CompressOptions default to the
    committed report's decision."""
    from pemn_compress.commands import compress as compress_command
    from pemn_compress.options import CompressOptions

    markdown = COMMITTED.with_suffix(".md").read_text()
    shown = re.search(rf"^{line}: \*\*(\w+)\*\*", markdown, flags=re.M).group(1)
    rows = read_csv(COMMITTED.with_suffix(".csv"))
    acc = {(r["method"], int(r["seed"])): float(r["accuracy"]) for r in rows}
    seeds = sorted(s for m, s in acc if m == "dense fp32")
    wins = [acc[(method, s)] > acc[("defaults", s)] for s in seeds]
    decided = changed if len(seeds) >= 3 and all(wins) else kept
    assert shown == {True: "on", False: "off"}.get(decided, decided)
    cli = {p.name: p.default for p in compress_command.params}
    assert getattr(CompressOptions(model="convmixer_192_6_p4"), option) == cli[option] == decided
