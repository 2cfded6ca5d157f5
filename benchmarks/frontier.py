"""The full-data size/accuracy report: what a user who trains on all their data gets, every byte on disk.

One paper-class zoo model (``convmixer_192_6_p4``: ConvMixer-192/6, kernel 5, patch 4, 260k parameters)
on the full Fashion-MNIST training set (60,000 images; the 10,000 test images), 10 epochs, with the
training recipe of ``pemn compress`` (its defaults, as chosen by ``benchmarks/recipe.py``). Every point
is a real file written, loaded back into a fresh model and evaluated; sizes are ``os.path.getsize``.

Rows:

- ``dense training``: the model's own weights trained with the same recipe and budget (loader,
  augmentation, optimizer, schedule, seed), stored as safetensors fp32, fp16 and int8 weight-only
  (``benchmarks/size_accuracy.py``'s formats: one fp32 scale per output channel, other tensors fp16).
- ``pemn compress`` defaults and ``--target-ratio`` points: ``compress()`` exactly as the CLI runs it.
- ``--density 0.5``: the default density before this report. The report decides the default density
  ("Default density": the most accurate measured density whose files meet both goals of the defaults;
  ``tests/test_frontier.py`` checks the code against it): at 0.5 every entropy-coded mask costs its
  raw bit per weight (24.6x on this model), at 0.35 the masks are rice-coded (25.4x). The rows labelled
  ``defaults`` ran with ``--density 0.35`` before it became the default, and those now labelled
  ``--density 0.5`` as ``defaults`` before: the same options, relabelled in the CSV when the default moved.
- ``defaults + density annealing`` and ``--target-ratio 40 + density annealing``: beyond the paper
  (``--density-schedule anneal``, ``pemn_compress.annealing``: the masks start dense and reach their
  density at 75% of training), each paired seed by seed against the row without it; the ``--target-ratio
  40`` rows ran as ``compress(options, callbacks=[DensityAnnealing()])`` before the option existed, which
  trains the same weights (``tests/test_annealing.py``).
- ``defaults + augmentation``: ``--augment`` (random crop + flip), the option the recipe benchmark's
  3-epoch sweep turned off and the one most likely to pay only in longer runs; it decides the default
  ("Default augmentation", like the density schedule: on only if it beat ``defaults`` on every seed).
- ``--target-ratio 40 + global allocation``: beyond the paper (``pemn_compress.allocation``: one
  threshold over every layer's scores, each relative to its initial scale, instead of the same density
  in every layer), paired seed by seed against ``--target-ratio 40`` like annealing.
- ``previous defaults``: density 0.5, Kaiming-normal values, crop+flip augmentation, weight decay 5e-5
  (the defaults before the recipe benchmark and this report), to show what the changes are worth at
  this budget.
- ``magnitude pruning`` / ``random pruning``: the paper's baselines, sparse networks trained with the
  same recipe (gradual magnitude pruning, cubic schedule ending at 75% of training; or one fixed random
  mask), stored as a coded bitmap + fp16 kept values + fp16 rest; sparsities sized to land near the
  PEMN rows' bytes.

The headline rows (dense, defaults alone and with annealing or augmentation, ``--density 0.5``,
``--target-ratio 40`` alone and with annealing or global allocation) run for every seed of ``--seeds`` (3),
the others for the first seed.
Jobs run seed by seed, so a run stopped early holds complete seeds. Each finished job appends its rows
to the CSV; ``--resume`` skips finished jobs, ``--only REGEX`` selects jobs, ``--worker I/N`` takes
every N-th job of the plan from the I-th (N processes share the cores and the CSV, each in plan order;
start them with the same plan), ``--render`` rebuilds the Markdown (with the goals of issue 13: the
defaults within 1.0 point of dense fp32 at >= 25x; the ``--target-ratio 40`` files within 2.5 points;
mean of the seeds) and ``--readme README.md`` also refreshes the README's generated block.
Outputs: ``benchmarks/results/frontier_<task>_<model>_cpu.{csv,json,md}``.

Cost: 28 jobs of 10 epochs; at 2.5 to 6 minutes per epoch on one core (the CSV's ``train_seconds``:
more for dense training and pruning, and while other work shares the cores), 17 to 22 hours of one
core, 9 to 11 hours with two processes on the 2 cores.

    nohup nice -n 10 python benchmarks/frontier.py --resume --worker 0/2 > a.log 2>&1 &   # even jobs of the plan
    nohup nice -n 10 python benchmarks/frontier.py --resume --worker 1/2 > b.log 2>&1 &   # odd jobs
    python benchmarks/frontier.py --dry-run
    python benchmarks/frontier.py --quick --out /tmp/q        # test_convmixer, 300/500 images, 1 epoch: seconds
    python benchmarks/frontier.py --readme README.md \\
        --render benchmarks/results/frontier_fashion-mnist_convmixer_192_6_p4_cpu.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import pemn_compress as pemn
from pemn_compress.allocation import GlobalAllocation
from pemn_compress.compress import CompressOptions, compress
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.train import evaluate

HERE = Path(__file__).parent
RESULTS = HERE / "results"
MODEL = "convmixer_192_6_p4"
# max gap to dense fp32 (points), min ratio; "--density": a candidate default density, held to the defaults' goal
GOALS = {"defaults": (1.0, 25.0), "--target-ratio": (2.5, None), "--density": (1.0, 25.0)}
README_BEGIN = "<!-- frontier:begin (generated by benchmarks/frontier.py --render ... --readme README.md) -->"
README_END = "<!-- frontier:end -->"
FIELDS = [
    "job", "group", "method", "flags", "seed", "epochs", "artifact", "accuracy", "bytes", "ratio", "density",
    "train_samples", "test_samples", "train_seconds", "images_per_sec",
]  # fmt: skip


def _script(name: str):
    """A companion benchmark script (recipe, size_accuracy) as a module, loaded once from its file."""
    key = f"pemn_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@dataclasses.dataclass(frozen=True)
class Point:
    method: str  # the row label
    group: str  # dense | pemn | pruning
    changes: dict = dataclasses.field(default_factory=dict)  # CompressOptions overrides (pemn)
    sparsity: float = 0.0  # pruning
    how: str = ""  # pruning: magnitude | random
    every_seed: bool = False  # a headline row: every seed
    callbacks: tuple = ()  # trainer callback factories: a method measured here before it becomes an option
    base: str = ""  # the row this one is paired against, seed by seed (a method measured alone)
    note: str = ""  # how to get it, for a setting that is no `pemn compress` flag yet

    @property
    def flags(self) -> str:
        if self.note:
            return self.note
        if self.group == "dense":
            return "(weights trained, no mask)"
        if self.group == "pruning":
            return f"(weights trained, {self.sparsity:.1%} of conv/linear weights removed)"
        return _script("recipe").cli_flags(self.changes)


POINTS = (
    Point("dense training", "dense", every_seed=True),
    Point("defaults", "pemn", every_seed=True),
    Point("--density 0.5", "pemn", {"density": 0.5}, every_seed=True),  # the default density before this report
    Point("defaults + density annealing", "pemn", {"density_schedule": "anneal"}, every_seed=True, base="defaults"),
    Point("defaults + augmentation", "pemn", {"augment": True}, every_seed=True, base="defaults"),  # 10 epochs
    Point("--target-ratio 40", "pemn", {"target_ratio": 40.0}, every_seed=True),
    Point("--target-ratio 40 + density annealing", "pemn", {"target_ratio": 40.0, "density_schedule": "anneal"},
          every_seed=True, base="--target-ratio 40"),
    Point("--target-ratio 40 + global allocation", "pemn", {"target_ratio": 40.0}, every_seed=True,
          callbacks=(GlobalAllocation,), base="--target-ratio 40",
          note="--target-ratio 40; not a flag yet: compress(options, callbacks=[GlobalAllocation()])"),
    Point("magnitude pruning 98%", "pruning", sparsity=0.98, how="magnitude"),
    Point("magnitude pruning 99%", "pruning", sparsity=0.99, how="magnitude"),
    Point("previous defaults", "pemn", {"density": 0.5, "distribution": "normal", "augment": True,
                                        "weight_decay": 5e-5}),
    Point("random pruning 98%", "pruning", sparsity=0.98, how="random"),
)
BY_METHOD = {p.method: p for p in POINTS}
DENSE_FORMATS = (("dense fp32", "safetensors fp32", "fp32"), ("dense fp16", "safetensors fp16", "fp16"),
                 ("int8 weight-only", "int8 per-channel + fp16 rest", "int8"))  # (row, file, file name suffix)


def points(target_ratio: float) -> list[Point]:
    """POINTS with the target-ratio rows at ``target_ratio`` (--quick: a ratio its tiny model can reach)."""
    out = []
    for p in POINTS:
        if p.changes.get("target_ratio") == 40.0:
            swap = lambda text: text.replace("--target-ratio 40", f"--target-ratio {target_ratio:g}")  # noqa: E731
            p = dataclasses.replace(p, method=swap(p.method), changes=p.changes | {"target_ratio": target_ratio},
                                    base=swap(p.base), note=swap(p.note))  # fmt: skip
        out.append(p)
    return out


def plan(seeds: list[int], target_ratio: float = 40.0) -> list[dict]:
    """Every job, seed by seed: the headline rows of a seed, then (first seed) the single-seed rows last."""
    chosen = points(target_ratio)
    jobs = [{"point": p, "seed": s} for s in seeds for p in chosen if p.every_seed]
    jobs += [{"point": p, "seed": seeds[0]} for p in chosen if not p.every_seed]
    for j in jobs:
        j["job"] = f"{j['point'].method}|{j['seed']}"
    return jobs


class Runner:
    def __init__(self, args, data_spec: str):
        self.args, self.data_spec = args, data_spec
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.data = get_dataset(data_spec)
        self.sa, self.recipe = _script("size_accuracy"), _script("recipe")
        reference = self.make_model()
        path = self.work / "reference_fp32.safetensors"
        self.sa.save_dense(reference, path, torch.float32)
        self.fp32_bytes = os.path.getsize(path)  # the same for every seed: same architecture

    def make_model(self):
        return pemn.create_model(self.args.model, **self.recipe.model_kwargs(self.data))

    def options(self, point: Point, seed: int, **extra) -> CompressOptions:
        base = dict(model=self.args.model, data=self.data_spec, epochs=self.args.epochs, seed=seed,
                    threads=self.args.threads, device="cpu")  # fmt: skip
        return CompressOptions(**(base | point.changes | extra))

    def row(self, j: dict, accuracy: float, path: Path, artifact: str, fit, **extra) -> dict:
        size = os.path.getsize(path)
        point = j["point"]
        return {
            "job": j["job"], "group": point.group, "method": point.method, "flags": point.flags, "seed": j["seed"],
            "epochs": self.args.epochs, "artifact": artifact, "accuracy": accuracy, "bytes": size,
            "ratio": self.fp32_bytes / size, "density": "", "train_samples": self.data.num_train,
            "test_samples": self.data.num_test, "train_seconds": fit.train_seconds,
            "images_per_sec": fit.images_per_sec,
        } | extra  # fmt: skip

    def evaluate_file(self, fmt: str, path: Path) -> float:
        model = self.sa.load_artifact(fmt, path, self.make_model)
        test = BatchLoader.from_dataset(self.data, "test", batch_size=500)
        return evaluate(model, test, "cpu")[1]

    def run(self, j: dict) -> list[dict]:
        point, seed = j["point"], j["seed"]
        stem = self.work / re.sub(r"[^A-Za-z0-9.]+", "_", f"e{self.args.epochs}_{point.method}_s{seed}").strip("_")
        if point.group == "pemn":
            output = stem.with_suffix(".pemn")
            resume = Path(str(output) + ".ckpt").exists()  # a job stopped mid-training continues
            options = dataclasses.replace(self.options(point, seed), output=str(output), resume=resume)
            result = compress(options, callbacks=[make() for make in point.callbacks])
            density = pemn.read_pemn(output).header["config"]["density"]
            # result.accuracy: the written bytes loaded back as pemn.load does
            return [self.row(j, result.accuracy, output, "pemn", result, density=density)]
        options = self.options(point, seed)
        callbacks = [lambda m: self.sa.Pruning(m, point.how, point.sparsity, seed)] if point.group == "pruning" else []
        model, fit, _ = self.recipe.train_weights(options, self.data, self.args.model, callbacks=callbacks)
        if point.group == "pruning":
            path = stem.with_suffix(".safetensors")
            self.sa.save_sparse(model, path)
            return [self.row(j, self.evaluate_file("sparse", path), path, "sparse: coded bitmap + fp16 values", fit,
                             density=1.0 - point.sparsity)]  # fmt: skip
        rows = []
        for (method, artifact, suffix), (fmt, save) in zip(DENSE_FORMATS, (
            ("dense", lambda p: self.sa.save_dense(model, p, torch.float32)),
            ("dense", lambda p: self.sa.save_dense(model, p, torch.float16)),
            ("int8", lambda p: self.sa.save_int8(model, p)),
        ), strict=True):  # fmt: skip
            path = self.work / f"dense_e{self.args.epochs}_s{seed}_{suffix}.safetensors"
            save(path)
            rows.append(self.row(j, self.evaluate_file(fmt, path), path, artifact, fit) | {"method": method})
        return rows


# ------------------------------------------------------------------------------------------ reports
def read_rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["seed"], r["epochs"], r["bytes"] = int(r["seed"]), int(r["epochs"]), int(r["bytes"])
        r["accuracy"], r["ratio"] = float(r["accuracy"]), float(r["ratio"])
    return rows


def write_rows(csv_path: Path, rows: list[dict]) -> None:
    with open(csv_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def by_method(rows: list[dict]) -> dict[str, dict[int, dict]]:
    """method -> seed -> row."""
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r["method"], {})[r["seed"]] = r
    return out


def mean_sd(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.2f}{spread}"


def gaps_to_dense(groups: dict[str, dict[int, dict]], method: str) -> tuple[list[float], float]:
    """The method's accuracy gaps to dense fp32 in points, seed by seed (the seeds both have), and its
    mean ratio vs fp32 over those seeds (nan without any)."""
    rows, dense = groups.get(method, {}), groups.get("dense fp32", {})
    seeds = sorted(set(rows) & set(dense))
    ratio = statistics.fmean(rows[s]["ratio"] for s in seeds) if seeds else math.nan
    return [100 * (dense[s]["accuracy"] - rows[s]["accuracy"]) for s in seeds], ratio


def density_rows(groups: dict[str, dict[int, dict]]) -> list[str]:
    """The rows that differ from the defaults in their density alone: ``defaults`` and ``--density X``."""
    return [m for m in groups if m == "defaults" or re.fullmatch(r"--density [\d.]+", m)]


def default_density(groups: dict[str, dict[int, dict]]) -> tuple[float, str] | None:
    """The density the defaults should have, and why: among the density rows measured on every seed
    of the headline rows, the most accurate one (mean) of those whose files meet both goals of the
    defaults; the most accurate one when none does. None while a density row lacks seeds."""
    seeds = len(groups.get("dense fp32", {}))
    stats = {m: gaps_to_dense(groups, m) for m in density_rows(groups)}
    if seeds < 2 or any(len(g) < seeds for g, _ in stats.values()):
        return None
    max_gap, min_ratio = GOALS["defaults"]
    meets = [m for m, (g, r) in stats.items() if statistics.fmean(g) <= max_gap and r >= min_ratio]
    best = min(meets or stats, key=lambda m: statistics.fmean(stats[m][0]))
    density_of = lambda m: float(next(iter(groups[m].values()))["density"])  # noqa: E731
    density = density_of(best)
    summary = "; ".join(f"`{m}` (density {density_of(m):g}): "
                        f"{below(statistics.fmean(g))} dense, {r:.1f}x" for m, (g, r) in stats.items())
    rule = ("the most accurate of those meeting both goals of the defaults (within {0} points of dense fp32, "
            ">= {1:g}x)" if meets else "none meets both goals of the defaults: the most accurate").format(
                max_gap, min_ratio)  # fmt: skip
    return density, f"{rule}, mean of {seeds} seeds: {summary}"


# options decided by one row that changes the defaults in that option alone: (option, row, the report's line,
# the value when the row beat ``defaults`` on every seed, the value otherwise)
ONE_ROW_DECISIONS = (
    ("density_schedule", "defaults + density annealing", "Default density schedule", "anneal", "constant"),
    ("augment", "defaults + augmentation", "Default augmentation", "on", "off"),
)


def one_row_decision(
    groups: dict[str, dict[int, dict]], method: str, changed: str, kept: str
) -> tuple[str, str] | None:
    """The value an option of the defaults should have, and why: ``changed`` when ``method`` (the defaults
    with that option changed) beat ``defaults`` on every seed of the headline rows (3 or more), else
    ``kept``. None while a seed is missing."""
    seeds, deltas, per_seed = paired(groups, method, "defaults")
    if len(seeds) < 3 or seeds != sorted(groups.get("dense fp32", {})):
        return None
    if min(deltas) > 0:
        return changed, f"`{method}` beat `defaults` on every seed ({per_seed})"
    return kept, f"`{method}` did not beat `defaults` on every seed ({per_seed})"


def paired(groups: dict[str, dict[int, dict]], method: str, base: str) -> tuple[list[int], list[float], str]:
    """The seeds both rows have, ``method - base`` in points on each, and those as "s0 +0.12, ..."."""
    rows, under = groups.get(method, {}), groups.get(base, {})
    seeds = sorted(set(rows) & set(under))
    deltas = [100 * (rows[s]["accuracy"] - under[s]["accuracy"]) for s in seeds]
    return seeds, deltas, ", ".join(f"s{s} {d:+.2f}" for s, d in zip(seeds, deltas, strict=True))


def below(gap: float) -> str:
    return f"{gap:.2f} points below" if gap >= 0 else f"{-gap:.2f} points above"


def goals(groups: dict[str, dict[int, dict]]) -> list[str]:
    """The issue-13 goals, met or missed (and by how much), from the rows alone."""
    lines = []
    targets = sorted(m for m in groups if m.startswith("--target-ratio") and "+" not in m) or ["--target-ratio 40"]
    candidates = sorted(m for m in groups if m.startswith("--density"))
    for method in ["defaults", *targets, *candidates]:
        max_gap, min_ratio = GOALS[method.split(" ")[0]]
        gaps, ratio = gaps_to_dense(groups, method)
        if not gaps:
            lines.append(f"- `{method}`: not measured yet.")
            continue
        gap = statistics.fmean(gaps)
        verdict = "met" if gap <= max_gap else f"missed by {gap - max_gap:.2f} points"
        text = (f"- `{method}`: {below(gap)} dense fp32 (mean of {len(gaps)} seed(s), paired; per seed "
                f"{', '.join(f'{g:+.2f}' for g in gaps)}), goal <= {max_gap} points: **{verdict}**")  # fmt: skip
        if min_ratio is not None:
            met = "met" if ratio >= min_ratio else f"missed by {min_ratio - ratio:.2f}x"
            text += f"; {ratio:.1f}x smaller than dense fp32 on disk, goal >= {min_ratio:g}x: **{met}**"
        else:
            text += f"; {ratio:.1f}x smaller than dense fp32 on disk"
        lines.append(text + ".")
    return lines


def paired_lines(groups: dict[str, dict[int, dict]], target_ratio: float) -> list[str]:
    """Each method measured alone against its base row: the paired difference, seed by seed."""
    lines = []
    for p in points(target_ratio):
        seeds, deltas, per_seed = paired(groups, p.method, p.base) if p.base else ([], [], "")
        if not seeds:
            continue
        verdict = ("one seed: no verdict yet" if len(deltas) < 2 else "better on every seed" if min(deltas) > 0
                   else "worse on every seed" if max(deltas) < 0 else "mixed")  # fmt: skip
        spread = f" ± {statistics.stdev(deltas):.2f}" if len(deltas) > 1 else ""
        lines.append(f"- {p.method} against {p.base}: {statistics.fmean(deltas):+.2f}{spread} points over "
                     f"{len(seeds)} seed(s), paired ({per_seed}): {verdict}.")  # fmt: skip
    return lines


def table(groups: dict[str, dict[int, dict]]) -> list[str]:
    lines = [
        "| method | `pemn compress` flags | file | n | accuracy % (mean ± sd) | per seed % | bytes (mean) "
        "| ratio vs fp32 | density |",
        "|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    order = [m for p in POINTS for m in ([f for f, _, _ in DENSE_FORMATS] if p.group == "dense" else [p.method])]
    rank = {m: i for i, m in enumerate(order)}
    rank |= {m: order.index(re.sub(r"--target-ratio [\d.]+", "--target-ratio 40", m)) for m in groups if "target" in m}
    for method in sorted(groups, key=lambda m: rank.get(m, len(order))):
        rs = [groups[method][s] for s in sorted(groups[method])]
        density = {r["density"] for r in rs} - {""}
        per_seed = ", ".join(f"s{r['seed']} {100 * r['accuracy']:.2f}" for r in rs)
        lines.append(
            f"| {method} | {rs[0]['flags']} | {rs[0]['artifact']} | {len(rs)} | "
            f"{mean_sd([100 * r['accuracy'] for r in rs])} | "
            f"{per_seed} | "
            f"{statistics.fmean(r['bytes'] for r in rs):,.0f} | {statistics.fmean(r['ratio'] for r in rs):.1f}x | "
            f"{', '.join(sorted(f'{float(d):.3g}' for d in density)) or '-'} |"
        )
    return lines


def render(csv_path: Path, readme: Path | None = None) -> Path:
    rows = read_rows(csv_path)
    meta_path = csv_path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    groups = by_method(rows)
    ratio = next((float(m.split()[1]) for m in groups if m.startswith("--target-ratio")), 40.0)
    body = table(groups) + ["", "Goals (issue 13, on this setup):", ""] + goals(groups)
    decided = default_density(groups)
    if decided is not None:
        body += ["", f"Default density: **{decided[0]:g}**: {decided[1]}. `tests/test_frontier.py` checks that "
                 "`pemn compress` (and `MaskConfig`) default to it."]  # fmt: skip
    for _, method, line, changed, kept in ONE_ROW_DECISIONS:
        decision = one_row_decision(groups, method, changed, kept)
        if decision is not None:
            body += ["", f"{line}: **{decision[0]}**: {decision[1]}. `tests/test_frontier.py` checks that "
                     "`pemn compress` defaults to it."]  # fmt: skip
    paired = paired_lines(groups, ratio)
    if paired:
        body += ["", "Changes measured alone (paired against the row they change, same seeds; annealing and global "
                 "allocation go beyond the paper):", ""]
        body += paired
    lines = [
        f"# {meta.get('title', csv_path.stem)}",
        "",
        f"Command: `{meta.get('command', 'python benchmarks/frontier.py')}`",
        "",
        f"Setup: {meta.get('setup', '')}",
        "",
        "Every accuracy is that of the file on disk loaded back into a fresh model, on the full test set, after the "
        "last epoch (no best-epoch picking). *ratio vs fp32*: the dense fp32 safetensors file's bytes over this "
        "file's. *n*: seeds; headline rows run 3 seeds, the others one. Dense rows: one trained model per seed "
        "stored three ways.",
        "",
    ] + body
    md_path = csv_path.with_suffix(".md")
    md_path.write_text("\n".join(lines) + "\n")
    print(f"wrote {md_path}")
    if readme is not None:
        block = [README_BEGIN, f"Setup: {meta.get('setup', '')}", "", *body, README_END]
        _script("size_accuracy").replace_block(readme, README_BEGIN, README_END, block)
        print(f"updated {readme}")
    return md_path


# ---------------------------------------------------------------------------------------------- main
def worker_spec(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, found {text!r}")
    return int(match.group(1)), int(match.group(2))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL, help="zoo model name")
    parser.add_argument("--data", default="fashion-mnist", help="dataset spec (see `pemn compress --help`)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of every row")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; headline rows run every seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the CSV, JSON and Markdown")
    parser.add_argument("--work", default=None, help="folder for the files (default runs/frontier/<name>)")
    parser.add_argument("--resume", action="store_true", help="skip the jobs already in the CSV")
    parser.add_argument("--only", metavar="REGEX", help="run only the jobs whose id (method|seed) matches")
    parser.add_argument("--worker", type=worker_spec, default=(0, 1), metavar="I/N",
                        help="run only jobs I, I+N, I+2N, ... of the plan (0 <= I < N)")
    parser.add_argument("--dry-run", action="store_true", help="print the jobs that would run")
    parser.add_argument("--quick", action="store_true", help="test_convmixer, 300 training / 500 test images, 1 epoch")
    parser.add_argument("--render", metavar="CSV", help="only rebuild the Markdown from a results CSV")
    parser.add_argument("--readme", metavar="README", help="with --render: also refresh the README's generated block")
    parser.add_argument("--target-ratio", type=float, default=40.0, help="the --target-ratio row (--quick: 2)")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.epochs, args.target_ratio = "test_convmixer", 1, 2.0
    return args


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.render:
        render(Path(args.render), Path(args.readme) if args.readme else None)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    task = args.data.replace(":", "_").replace("/", "_")
    name = f"frontier{'_quick' if args.quick else ''}_{task}_{args.model}_cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or str(Path("runs") / "frontier" / name)
    csv_path = out / f"{name}.csv"
    done = {r["job"] for r in read_rows(csv_path)} if args.resume and csv_path.exists() else set()
    worker, workers = args.worker
    jobs = [j for i, j in enumerate(plan(seeds, args.target_ratio)) if i % workers == worker]  # before `done`: stable
    jobs = [j for j in jobs if j["job"] not in done and (not args.only or re.search(args.only, j["job"]))]
    if args.dry_run:
        for j in jobs:
            print(f"{j['job']:<60} {args.epochs} epochs")
        print(f"{len(jobs)} jobs, {len(jobs) * args.epochs} epochs")
        return
    if not (args.resume and csv_path.exists()):
        with open(csv_path, "w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=FIELDS).writeheader()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    data_spec = _script("recipe").quick_data(Path(args.work), 300, 500) if args.quick else args.data
    runner = Runner(args, data_spec)
    d = CompressOptions(model=args.model)
    meta_path = csv_path.with_suffix(".json")
    started = _script("recipe").started_date(meta_path, args.resume)
    skip = ("--resume", "--only", "--worker")  # how a run was split is not part of what it measures
    recorded = [a for i, a in enumerate(argv) if a not in skip and (i == 0 or argv[i - 1] not in skip)]
    setup = (
        f"{args.model} on {'a 300/500-image subset of ' if args.quick else 'all of '}{args.data} "
        f"({runner.data.num_train:,} training, {runner.data.num_test:,} test images), {args.epochs} epochs, the "
        f"recipe of `pemn compress` for every row (strategy {d.strategy}, density {d.density}, {d.distribution} "
        f"values, augmentation {'on' if d.augment else 'off'}, {d.optimizer} lr {d.lr:g}, {d.schedule} schedule, "
        f"batch {d.batch_size}, weight decay {d.weight_decay:g}, {d.dense_dtype} leftovers, BatchNorm folded, "
        f"format v{d.format_version}) except where a row changes it; seeds {args.seeds}; cpu, torch "
        f"{torch.__version__}, {platform.machine()}, {args.threads} thread(s); started {started}."
    )
    meta_path.write_text(json.dumps({
        "command": ("python benchmarks/frontier.py " + " ".join(shlex.quote(a) for a in recorded)).strip(),
        "setup": setup, "title": f"Full-data size/accuracy report: {args.model} on {args.data}",
    }, indent=1))  # fmt: skip
    started = time.time()
    print(f"{len(jobs)} jobs, {len(jobs) * args.epochs} epochs", flush=True)
    for i, j in enumerate(jobs, 1):
        rows = runner.run(j)
        write_rows(csv_path, rows)
        per_job = (time.time() - started) / i
        print(f"[{i}/{len(jobs)}] {j['job']:<50} " + ", ".join(f"{r['method']} {100 * r['accuracy']:.2f}% "
              f"{r['bytes']:,} B" for r in rows) + f"  {(len(jobs) - i) * per_job / 3600:.1f} h left",
              flush=True)  # fmt: skip
    render(csv_path)


if __name__ == "__main__":
    main()
