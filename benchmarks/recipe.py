"""The training recipe of `pemn compress`, measured: each knob users never change, one at a time.

For one zoo model on the full Fashion-MNIST training set (60,000 images, the 10,000 test images),
every point is a real ``compress()`` run (the pipeline behind ``pemn compress``): masks trained,
the ``.pemn`` file written, loaded back and evaluated, exactly as a user gets it. Each point changes
one option against the *baseline* (``BASELINE``: the defaults of ``pemn compress`` when the sweep
started, pinned so that rows stay comparable after the sweep changed the defaults: strategy onelayer,
density 0.5, Kaiming-normal values, crop+flip augmentation, AdamW lr 0.01, cosine schedule, batch 128,
weight decay 5e-5 on the scores, no label smoothing): value distribution, augmentation, learning rate
x0.5 and x2, one-cycle schedule, batch 256, weight decay 0 and x10, label smoothing 0.1, density 0.35
(entropy-coded masks, 4% fewer mask bytes than 0.5), score initialization (``--score-scale`` x10 and
x0.1: the initial scores' Kaiming bound times that; with AdamW a larger one makes masks change more
slowly), distillation
from a dense model (what a user who brings trained weights gets by default), the combination that
issue 13 reported (signed-constant values, no augmentation, batch 256, one-cycle), and density
annealing (``pemn_compress.annealing``: a method measured here before it becomes an option). The
reference ``dense training`` row trains the model's weights with the same recipe and budget (its
accuracy is that of its fp32 safetensors file loaded back); it is also the distillation teacher of its seed.

Every point runs for every seed in ``--seeds`` with the same seed as the baseline (same values,
initial scores, data order and augmentation), so each change is reported as a *paired* difference
against the baseline, seed by seed. The report ends with the *recommended defaults*: per option, the
value of the single-flag row with the largest mean gain among those better than the baseline on every
seed, else the baseline's; ``tests/test_recipe.py`` checks that the code's defaults equal it. Phase
``sweep`` runs ``--epochs`` (3); an optional phase ``long`` (``--long-epochs N``, off by default) reruns
the baseline, the ``--long-top`` best settings and dense training for N epochs. The 10-epoch
comparison of the chosen defaults against dense training, the baselines and ``--target-ratio`` is
``benchmarks/frontier.py``. Jobs run in priority order, every seed of a point back to back.

Each finished job appends one CSV row, so ``--resume`` skips finished jobs (and continues a job
stopped mid-training from its ``compress`` checkpoint); ``--only REGEX`` selects jobs, so two processes
on disjoint selections share the 2 cores. ``--render`` rebuilds the Markdown table (mean, per-seed
values, paired delta against the baseline, the recommendation) from the CSV alone. Outputs, named by
task, model and device: ``benchmarks/results/recipe_<task>_<model>_cpu.{csv,json,md}``; the ``.pemn``
files and dense teachers go to ``runs/recipe/<name>/``. A distillation job trains its seed's 3-epoch
dense teacher first when the file is missing (its dense row is not rewritten).

The sweep is 36 jobs (108 epochs): at about 2.5-3.5 minutes per epoch on one core (the slower while
other jobs share the 2 cores), about 5 hours of one core. The log prints the measured time per epoch
and the hours left after every job.

``--candidates`` measures the mask-training throughput of candidate 28x28 ConvMixers (1 thread,
real augmented batches) and writes ``benchmarks/results/recipe_candidates_cpu.md``: the registered
``convmixer_192_6_p4`` was chosen from it (one epoch in about 2-3 minutes on one core).

    nohup nice -n 10 python benchmarks/recipe.py --resume > recipe_run.log 2>&1 &   # the sweep
    python benchmarks/recipe.py --dry-run                 # the job list and its epoch count
    python benchmarks/recipe.py --quick --out /tmp/q      # a few hundred images, 1 epoch: seconds
    python benchmarks/recipe.py --render benchmarks/results/recipe_fashion-mnist_convmixer_192_6_p4_cpu.csv \\
        --readme docs/reports.md                          # the report and its block in docs/reports.md
    python benchmarks/recipe.py --candidates              # the model-choice throughput table (a few minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import sys
import time
from pathlib import Path

import _harness as h
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.models.convmixer import ConvMixer
from pemn_compress.pipeline import CompressOptions, compress
from pemn_compress.train import evaluate

MODEL = "convmixer_192_6_p4"
# The sweep's baseline: the defaults of `pemn compress` when the sweep started, before it changed them. Every
# row changes one of these against it; pinned here so that rows stay comparable as the code's defaults move.
BASELINE = dict(strategy="onelayer", density=0.5, distribution="normal", augment=True, optimizer="adamw", lr=0.01,
                schedule="cosine", batch_size=128, weight_decay=5e-5, label_smoothing=0.0, score_scale=1.0,
                density_schedule="constant")  # fmt: skip
DEFAULTS = CompressOptions(model=MODEL, **BASELINE)
FIELDS = [
    "job",
    "phase",
    "epochs",
    "factor",
    "setting",
    "flags",
    "seed",
    "accuracy",
    "epoch_accuracies",
    "dense_accuracy",
    "file_bytes",
    "ratio",
    "train_samples",
    "test_samples",
    "train_seconds",
    "seconds",
    "images_per_sec",
]


@dataclasses.dataclass(frozen=True)
class Point:
    """One setting of the sweep: the options it changes against the defaults."""

    setting: str  # the label in the report (unique)
    factor: str  # what it varies
    changes: dict = dataclasses.field(default_factory=dict)  # CompressOptions overrides
    kind: str = "pemn"  # pemn (a zoo model, no teacher) | dense (weights trained) | distill (the dense model as input)

    @property
    def flags(self) -> str:
        """The `pemn compress` flags that give this setting."""
        if self.kind == "dense":
            return "(weights trained; no mask)"
        if self.kind == "distill":
            return "a trained state dict as input (distillation on by default)"
        return h.cli_flags(self.changes)



D = DEFAULTS
POINTS = (  # in priority order: the defaults, the two changes issue 13 suspects, the dense gap, the setting
    Point("defaults", "defaults"),
    Point("signed-constant values", "value distribution", {"distribution": "signed_constant"}),
    Point("no augmentation", "augmentation", {"augment": False}),
    Point("dense training", "reference", kind="dense"),
    Point(
        "issue 13 combination",
        "combination",
        {"distribution": "signed_constant", "augment": False, "batch_size": 2 * D.batch_size, "schedule": "onecycle"},
    ),
    Point("one-cycle schedule", "schedule", {"schedule": "onecycle"}),
    Point("batch 256", "batch size", {"batch_size": 2 * D.batch_size}),
    Point("lr x2", "learning rate", {"lr": 2 * D.lr}),
    Point("lr x0.5", "learning rate", {"lr": D.lr / 2}),
    Point("distillation from the dense model", "distillation", kind="distill"),
    Point("label smoothing 0.1", "label smoothing", {"label_smoothing": 0.1}),
    Point("no weight decay", "weight decay (scores)", {"weight_decay": 0.0}),
    Point("weight decay x10", "weight decay (scores)", {"weight_decay": 10 * D.weight_decay}),
    Point("uniform values", "value distribution", {"distribution": "uniform"}),
    Point("density 0.35", "density", {"density": 0.35}),  # entropy-coded masks: 4% fewer mask bytes than 0.5
    Point("score scale x10", "score initialization", {"score_scale": 10 * D.score_scale}),  # masks change slower
    Point("score scale x0.1", "score initialization", {"score_scale": D.score_scale / 10}),  # ... faster
    Point("density annealing", "density schedule", {"density_schedule": "anneal"}),
)
BY_SETTING = {p.setting: p for p in POINTS}
SELECTABLE = [p.setting for p in POINTS if p.kind == "pemn" and p.setting != "defaults"]  # long-phase candidates


# ---------------------------------------------------------------------------------------------- plan
def job(phase: str, point: Point, seed: int, epochs: int) -> dict:
    return {"job": f"{phase}|{point.setting}|{seed}", "phase": phase, "point": point, "seed": seed, "epochs": epochs}


def sweep_jobs(seeds: list[int], epochs: int) -> list[dict]:
    return [job("sweep", p, s, epochs) for p in POINTS for s in seeds]


def best_settings(rows: list[dict], epochs: int, top: int) -> list[str]:
    """The ``top`` selectable settings with the highest mean accuracy at ``epochs`` (phase sweep)."""
    accs: dict[str, list[float]] = {}
    for r in rows:
        if r["phase"] == "sweep" and int(r["epochs"]) == epochs and r["setting"] in SELECTABLE:
            accs.setdefault(r["setting"], []).append(float(r["accuracy"]))
    return sorted(accs, key=lambda s: -statistics.fmean(accs[s]))[:top]


def long_jobs(rows: list[dict], seeds: list[int], args) -> list[dict]:
    """Defaults, the best sweep settings and dense training at ``--long-epochs`` (after the whole sweep)."""
    if not args.long_epochs or not args.long_top:
        return []
    points = [BY_SETTING["defaults"]] + [BY_SETTING[s] for s in best_settings(rows, args.epochs, args.long_top)]
    points.append(BY_SETTING["dense training"])
    return [job("long", p, s, args.long_epochs) for p in points for s in seeds]


# ------------------------------------------------------------------------------------------- running
class Runner:
    def __init__(self, args, data_spec: str):
        self.args, self.data_spec = args, data_spec
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self._data = None

    def options(self, point: Point, seed: int, epochs: int, **extra) -> CompressOptions:
        settings = dict(model=self.args.model, data=self.data_spec, epochs=epochs, seed=seed, threads=self.args.threads,
                        device="cpu")  # fmt: skip
        return CompressOptions(**(settings | BASELINE | point.changes | extra))

    def dense_path(self, seed: int, epochs: int) -> Path:
        return self.work / f"dense_e{epochs}_s{seed}.safetensors"

    def run(self, j: dict) -> dict:
        point, seed, epochs = j["point"], j["seed"], j["epochs"]
        stem = self.work / re.sub(r"[^A-Za-z0-9]+", "_", f"{j['phase']}_e{epochs}_{point.setting}_s{seed}")
        if point.kind == "dense":
            values = self.run_dense(self.options(point, seed, epochs), self.dense_path(seed, epochs))
        else:
            extra = {}
            if point.kind == "distill":
                teacher = self.dense_path(seed, epochs)
                if not teacher.exists():  # its dense row is in the CSV from an earlier run: train the file again
                    print(f"training the dense teacher {teacher.name} first", flush=True)
                    self.run_dense(self.options(BY_SETTING["dense training"], seed, epochs), teacher)
                extra = {"model": str(teacher), "arch": self.args.model}
            output = stem.with_suffix(".pemn")
            resume = Path(str(output) + ".ckpt").exists()  # a job stopped mid-training continues
            options = dataclasses.replace(self.options(point, seed, epochs, **extra), output=str(output), resume=resume)
            # result.accuracy: the written bytes loaded back as pemn.load does
            result = compress(options)
            values = {
                "accuracy": result.accuracy,
                "epoch_accuracies": [h["eval_acc"] for h in result.history[:-1]] + [result.accuracy],
                "dense_accuracy": result.dense_accuracy,
                "file_bytes": result.file_bytes,
                "ratio": result.ratio,
                "train_samples": result.train_samples,
                "test_samples": result.test_samples,
                "train_seconds": result.train_seconds,
                "seconds": result.seconds,
                "images_per_sec": result.images_per_sec,
            }
        return {
            "job": j["job"], "phase": j["phase"], "epochs": epochs, "factor": point.factor, "setting": point.setting,
            "flags": point.flags, "seed": seed,
        } | values  # fmt: skip

    def data(self):
        if self._data is None:
            self._data = get_dataset(self.data_spec)
        return self._data

    def run_dense(self, options: CompressOptions, path: Path) -> dict:
        """The model's own weights trained with the same recipe as ``compress`` trains masks (``train_weights``);
        saved as fp32 safetensors (the distillation input) and evaluated loaded back."""
        started = time.perf_counter()
        data = self.data()
        model, fit, history = h.train_weights(options, self.args.model, data)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, path)
        fresh = pemn.create_model(self.args.model, **h.model_kwargs(data))
        fresh.load_state_dict(load_file(path))
        _, accuracy = evaluate(fresh, BatchLoader.from_dataset(data, "test", batch_size=options.eval_batch_size), "cpu")
        return {
            "accuracy": accuracy,
            "epoch_accuracies": history + [accuracy],
            "dense_accuracy": None,
            "file_bytes": os.path.getsize(path),
            "ratio": 1.0,
            "train_samples": data.num_train,
            "test_samples": data.num_test,
            "train_seconds": fit.train_seconds,
            "seconds": time.perf_counter() - started,
            "images_per_sec": fit.images_per_sec,
        }


# ------------------------------------------------------------------------------------------ reports
def read_rows(csv_path: Path) -> list[dict]:
    return h.read_rows(csv_path, ints=("seed", "epochs"),
                       floats=("accuracy", "train_seconds", "seconds", "images_per_sec", "file_bytes", "ratio"))


def paired(rows: list[dict], base: list[dict]) -> dict[int, float]:
    """Seed -> accuracy difference in points against ``base`` (the defaults), for the seeds both have."""
    return h.paired({r["seed"]: r["accuracy"] for r in rows}, {r["seed"]: r["accuracy"] for r in base})


def fmt_delta(deltas: dict[int, float]) -> str:
    return h.mean_sd(deltas.values(), signed=True) if deltas else "-"


def table(rows: list[dict], phase: str, epochs: int) -> tuple[list[str], list[tuple[str, float, dict]]]:
    """The Markdown table of one phase, and (setting, mean accuracy, paired deltas) of each of its rows."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["phase"] == phase and r["epochs"] == epochs:
            groups.setdefault(r["setting"], []).append(r)
    order = [p.setting for p in POINTS]
    base = groups.get("defaults", [])
    lines = [
        "| factor | setting | `pemn compress` flags | n | accuracy % (mean) | per seed % "
        "| Δ vs defaults, paired (pts) | per-seed Δ (pts) | train img/s | file bytes | ratio vs fp32 |",
        "|---|---|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    summary = []
    for setting in sorted(groups, key=lambda s: order.index(s) if s in order else len(order)):
        rs = sorted(groups[setting], key=lambda r: r["seed"])
        mean = statistics.fmean(r["accuracy"] for r in rs)
        deltas = paired(rs, base) if setting != "defaults" else {}
        summary.append((setting, mean, deltas))
        per_seed = h.per_seed({r["seed"]: 100 * r["accuracy"] for r in rs}, signed=False)
        lines.append(
            f"| {rs[0]['factor']} | {setting} | {rs[0]['flags']} | {len(rs)} | {100 * mean:.2f} | {per_seed} | "
            f"{fmt_delta(deltas)} | {h.per_seed(deltas) or '-'} | "
            f"{statistics.fmean(r['images_per_sec'] for r in rs):,.0f} | "
            f"{statistics.fmean(r['file_bytes'] for r in rs):,.0f} | {statistics.fmean(r['ratio'] for r in rs):.1f}x |"
        )
    return lines, summary


def findings(summary: list[tuple[str, float, dict]], epochs: int) -> list[str]:
    lines = []
    masked = [s for s in summary if BY_SETTING.get(s[0], Point("", "")).kind != "dense"]
    if not masked:
        return lines
    best = max(masked, key=lambda s: s[1])
    span = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    lines.append(f"- Best `.pemn` setting at {span}: **{best[0]}**, {100 * best[1]:.2f}% (mean over seeds).")
    for setting, _, deltas in summary:
        if len(deltas) > 1:
            values = list(deltas.values())
            if all(d > 0 for d in values) or all(d < 0 for d in values):
                lines.append(
                    f"- {setting}: {'better' if values[0] > 0 else 'worse'} than the defaults on every seed "
                    f"({fmt_delta(deltas)} points)."
                )
    dense = next((s for s in summary if s[0] == "dense training"), None)
    default = next((s for s in summary if s[0] == "defaults"), None)
    if dense and default:
        lines.append(
            f"- Gap of the defaults to dense training in the same budget: {100 * (dense[1] - default[1]):.2f} points; "
            f"of the best setting: {100 * (dense[1] - best[1]):.2f} points (design bar for the defaults: within 1.0 "
            "point at >= 25x on disk)."
        )
    return lines


SINGLE_FLAG = [p for p in POINTS if p.kind == "pemn" and len(p.changes) == 1]
DISTILL = next(p for p in POINTS if p.kind == "distill")  # decides `distill` (None: on with a trained input)


# Options whose default this sweep measures but does not decide -> where it is decided, and why.
DECIDED_ELSEWHERE = {
    "density": "decided by the full-data report (benchmarks/results/frontier_*, \"Default density\"): its goal "
    "counts file bytes (>= 25x) as well as accuracy, at the default 10 epochs",
    "density_schedule": "decided by the full-data report (benchmarks/results/frontier_*, \"Default density "
    "schedule\"): at the default 10 epochs and density, 3 seeds",
}
ELSEWHERE = "(full-data report)"  # the recommendation column of an option decided elsewhere


def recommended(rows: list[dict], epochs: int) -> list[dict]:
    """The defaults the sweep at ``epochs`` recommends, one entry per option a single-flag row changes: the
    value of the row with the largest mean paired gain among the rows that beat the baseline on every seed
    (at least 2 seeds) and whose flag is a `pemn compress` option; otherwise the baseline's value. An option
    of ``DECIDED_ELSEWHERE`` gets ``ELSEWHERE`` and the reason."""
    summary = {s: d for s, _, d in table(rows, "sweep", epochs)[1]}
    out = []
    for option in dict.fromkeys(k for p in SINGLE_FLAG for k in p.changes):
        measured = [p.setting for p in SINGLE_FLAG if option in p.changes and p.setting in summary]
        if option in DECIDED_ELSEWHERE and measured:
            why = f"{DECIDED_ELSEWHERE[option]}; here: " + ", ".join(f"{s} {fmt_delta(summary[s])}" for s in measured)
            out.append({"option": option, "baseline": BASELINE[option], "value": ELSEWHERE, "why": why})
            continue
        wins = []
        for p in SINGLE_FLAG:
            deltas = summary.get(p.setting, {})
            if option in p.changes and len(deltas) >= 2 and all(d > 0 for d in deltas.values()):
                wins.append((statistics.fmean(deltas.values()), p))
        if wins:
            gain, best = max(wins, key=lambda w: w[0])
            value, why = best.changes[option], f"{best.setting}: {fmt_delta(summary[best.setting])} points, every seed"
        elif measured:
            value, why = BASELINE[option], "no change beat the baseline on every seed: " + ", ".join(
                f"{s} {fmt_delta(summary[s])}" for s in measured
            )
        else:
            continue
        out.append({"option": option, "baseline": BASELINE[option], "value": value, "why": why})
    distill = summary.get(DISTILL.setting)
    if distill:  # no flag: on by default (None) when the input carries trained weights, else False
        on = len(distill) >= 2 and all(d > 0 for d in distill.values())
        why = (f"{DISTILL.setting}: {fmt_delta(distill)} points" + (", every seed: on whenever the input carries "
               "trained weights" if on else ": not better on every seed, so off unless asked for"))  # fmt: skip
        out.append({"option": "distill", "baseline": None, "value": None if on else False, "why": why})
    return out


def recommendation_lines(rows: list[dict], epochs: int) -> list[str]:
    recs = recommended(rows, epochs)
    if not recs:
        return []
    lines = [
        "",
        f"## Recommended defaults ({epochs}-epoch sweep)",
        "",
        "The rule: per option, the value of the single-flag row with the largest mean paired gain among those "
        f"better than the baseline on every seed; else the baseline's value; {ELSEWHERE}: an option this sweep "
        "measures but does not decide. distill (no flag of its own: the input decides; None: on when the input "
        "carries trained weights): None if distillation from the dense model beat the baseline on every seed, "
        "else False. `tests/test_recipe.py` checks that the defaults of `pemn compress` "
        "(`CompressOptions`) equal this column.",
        "",
        "| option | baseline | recommended default | why |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['option']} | {r['baseline']!r} | {r['value'] if r['value'] == ELSEWHERE else repr(r['value'])} | "
              f"{r['why']} |" for r in recs]  # fmt: skip
    return lines


BLOCK_PREFIX = "<!-- recipe:begin"  # the generated block's markers, in whatever page --readme names
README_END = "<!-- recipe:end -->"


def block_begin(page: Path) -> str:
    """The block's opening marker, naming the page it is generated into."""
    return f"{BLOCK_PREFIX} (generated by benchmarks/recipe.py --render ... --readme {page.as_posix()}) -->"


def readme_lines(rows: list[dict], epochs: int, command: str) -> list[str]:
    """The README block: each sweep row's mean accuracy and paired difference, then the recommendation."""
    _, summary = table(rows, "sweep", epochs)
    flags = {r["setting"]: r["flags"] for r in rows}
    counts: dict[str, int] = {}
    for r in rows:
        if r["phase"] == "sweep" and r["epochs"] == epochs:
            counts[r["setting"]] = counts.get(r["setting"], 0) + 1
    lines = [
        f"Generated by `{command}` from the committed results ({epochs} epochs, all 60,000 training images).",
        "",
        "| setting | flags | seeds | accuracy % | Δ vs the baseline, paired (pts) |",
        "|---|---|---:|---:|---:|",
    ]
    for setting, mean, deltas in summary:
        label = "baseline (the defaults before this sweep)" if setting == "defaults" else setting
        lines.append(f"| {label} | {flags[setting]} | {counts[setting]} | {100 * mean:.2f} | {fmt_delta(deltas)} |")
    return lines + [""] + recommendation_lines(rows, epochs)[3:]  # without the section heading


def render(csv_path: Path, readme: Path | None = None) -> Path:
    """(Re)build the Markdown report of a run from its CSV and its .json (command, setup); ``readme``: also
    refresh its generated block."""
    rows = read_rows(csv_path)
    meta = h.read_meta(csv_path.with_suffix(".json"))
    lines = h.report_head(meta, csv_path.stem, "python benchmarks/recipe.py") + [
        "Every `.pemn` accuracy is that of the written file loaded back (the accuracy `compress` measures and "
        "records in the file), after the last epoch, on the full test set; dense training: its fp32 safetensors "
        "file loaded back. *Δ vs defaults, paired*: mean ± standard deviation over seeds of (setting - defaults) "
        "with the same seed (same values, initial scores, data order and augmentation). *train img/s*: whole-epoch "
        "training throughput on a machine shared with other jobs (noisy). *file bytes*: as written when the row ran "
        "(the rows of the sweep's first session wrote format version 1 files, about 4.5 KB larger than the version "
        "2 files of later rows: the header; accuracy does not depend on it). *ratio vs fp32*: the dense fp32 "
        "safetensors file's bytes over this file's.",
    ]
    phases = sorted({(r["phase"], r["epochs"]) for r in rows}, key=lambda pe: (pe[0] != "sweep", pe[1]))
    for phase, epochs in phases:
        body, summary = table(rows, phase, epochs)
        title = "one factor at a time" if phase == "sweep" else "longer training of the best settings"
        lines += (
            ["", f"## {epochs} epoch{'s' if epochs != 1 else ''}: {title}", ""]
            + body
            + [""]
            + findings(summary, epochs)
        )
    if not rows:
        lines += ["", "No finished job yet."]
    elif any(r["phase"] == "sweep" for r in rows):
        lines += recommendation_lines(rows, min(r["epochs"] for r in rows if r["phase"] == "sweep"))
    md_path = h.write_text(csv_path.with_suffix(".md"), lines)
    if readme is not None:
        epochs = min(r["epochs"] for r in rows if r["phase"] == "sweep")
        command = f"python benchmarks/recipe.py --render {csv_path.as_posix()} --readme {readme.as_posix()}"
        block = [block_begin(readme), *readme_lines(rows, epochs, command), README_END]
        h.replace_block(readme, BLOCK_PREFIX, README_END, block)
        print(f"updated {readme}")
    return md_path


# ----------------------------------------------------------------------------------------- candidates
CANDIDATES = (  # (dim, depth, kernel, patch): ConvMixer at the paper's proportions for 28x28 inputs
    (256, 6, 5, 4),
    (192, 6, 5, 4),
    (256, 6, 5, 7),
    (128, 8, 5, 2),
)

CHOICE = (
    "Chosen: ConvMixer-192/6, kernel 5, patch 4, registered as `convmixer_192_6_p4`: the paper's depth and kernel "
    "on 7x7 feature maps, the widest whose epoch fits 2-3 minutes on one core. Patch 7 is faster but leaves 4x4 "
    "maps (a 5x5 kernel there reads mostly padding); patch 2 (14x14 maps, the closest to the paper's 16x16 on "
    "CIFAR) is 4-5x slower; width 256 at patch 4 takes well over 3 minutes per epoch."
)


def measure_candidates(args) -> None:
    """Mask-training img/s of each candidate: the defaults' mask and trainer on real augmented batches of
    128, 1 thread; rounds alternate the candidates so that machine noise hits all alike; median over rounds."""
    torch.set_num_threads(args.threads)
    data = get_dataset(args.data)
    runs = []
    for dim, depth, kernel, patch in CANDIDATES:
        torch.manual_seed(0)
        model = ConvMixer(dim=dim, depth=depth, kernel_size=kernel, patch_size=patch, in_chans=1, img_size=28)
        params = sum(p.numel() for p in model.parameters())
        pemn.mask_(model, DEFAULTS.mask_config())
        loader = BatchLoader.from_dataset(
            data, "train", batch_size=128, shuffle=True, seed=0, crop_padding=2, hflip=True, drop_last=True
        )
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=DEFAULTS.lr)
        name = f"ConvMixer-{dim}/{depth}, kernel {kernel}, patch {patch}"
        runs.append({"name": name, "model": model.train(), "optimizer": optimizer, "params": params,
                     "batches": iter(loader), "ips": [], "eval_ips": []})  # fmt: skip
    test = BatchLoader.from_dataset(data.subset(None, 2000, seed=0), "test", batch_size=500)
    steps, warmup = (3, 1) if args.quick else (30, 3)
    rounds = 1 if args.quick else args.rounds
    for r in range(rounds):
        for run in runs:
            model, optimizer = run["model"], run["optimizer"]
            for i in range(warmup + steps):
                if i == warmup:
                    t0 = time.perf_counter()
                x, y = next(run["batches"])  # the loader's crop and flip are part of an epoch: timed too
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            run["ips"].append(steps * 128 / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            evaluate(model, test, "cpu")
            run["eval_ips"].append(2000 / (time.perf_counter() - t0))
            print(f"round {r + 1}: {run['name']}: {run['ips'][-1]:,.0f} img/s", flush=True)
    lines = [
        "# Throughput of candidate 28x28 ConvMixers (mask training, cpu)",
        "",
        "Command: `python benchmarks/recipe.py --candidates`",
        "",
        f"Setup: defaults' mask (onelayer, density 0.5) and AdamW step on real augmented Fashion-MNIST batches of 128; "
        f"{rounds} rounds x ({warmup} warm-up + {steps} timed steps) per candidate, candidates alternated; "
        f"median over rounds; eval: 2,000 test images in batches of 500; {h.environment(args.threads)}, "
        f"{h.load_average()}; {h.today()}.",
        "",
        "*epoch s*: 468 steps of 128 at the median rate. *3-epoch run s*: three epochs plus three evaluations of the "
        "10,000 test images (two epoch-end ones and the written file's).",
        "",
        "| candidate | parameters | train img/s (median) | per-round img/s | eval img/s | epoch s | 3-epoch run s |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for run in runs:
        ips, eval_ips = statistics.median(run["ips"]), statistics.median(run["eval_ips"])
        epoch = 468 * 128 / ips
        lines.append(
            f"| {run['name']} | {run['params']:,} | {ips:,.0f} | {', '.join(f'{v:,.0f}' for v in run['ips'])} | "
            f"{eval_ips:,.0f} | {epoch:,.0f} | {3 * epoch + 3 * 10000 / eval_ips:,.0f} |"
        )
    lines += ["", CHOICE]
    out = Path(args.out) / f"recipe_candidates{'_quick' if args.quick else ''}_cpu.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL, help="zoo model name")
    parser.add_argument("--data", default="fashion-mnist", help="dataset spec (see `pemn compress --help`)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the one-factor sweep")
    parser.add_argument(
        "--long-epochs", type=int, default=0,
        help="epochs of the long phase (0: none; the 10-epoch comparison is benchmarks/frontier.py)",
    )  # fmt: skip
    parser.add_argument("--long-top", type=int, default=2, help="best sweep settings rerun in the long phase")
    parser.add_argument("--seeds", default="0,1", help="comma-separated; every point runs every seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=str(h.RESULTS), help="folder for the CSV, JSON and Markdown")
    parser.add_argument("--work", default=None, help="folder for the .pemn files (default runs/recipe/<name>)")
    h.add_plan_options(parser, "phase|setting|seed")
    parser.add_argument("--dry-run", action="store_true", help="print the jobs that would run, and their epochs")
    parser.add_argument(
        "--quick", action="store_true", help="test_convmixer, 300 training / 500 test images, 1 epoch (2 long)"
    )
    parser.add_argument("--render", metavar="CSV", nargs="+", help="only rebuild the Markdown from results CSVs")
    parser.add_argument("--readme", metavar="README", help="with --render: also refresh the README's generated block")
    parser.add_argument("--candidates", action="store_true", help="measure candidate models' throughput")
    parser.add_argument("--rounds", type=int, default=3, help="--candidates: rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.epochs, args.long_epochs, args.long_top = "test_convmixer", 1, 2, 1
    return args


def setup_line(args, csv_path: Path) -> str:
    return (
        f"{args.model} on {'a 300/500-image subset of ' if args.quick else ''}{args.data}; every option at its "
        f"`pemn compress` default (strategy {D.strategy}, density {D.density}, {D.distribution} values, "
        f"augmentation {'on' if D.augment else 'off'}, {D.optimizer} lr {D.lr:g}, {D.schedule} schedule, batch "
        f"{D.batch_size}, weight decay {D.weight_decay:g}, label smoothing {D.label_smoothing:g}, BatchNorm folded, "
        f"{D.dense_dtype} leftovers) except the one a row changes; sweep {args.epochs} epochs, long phase "
        f"{args.long_epochs} epochs (defaults, the {args.long_top} best sweep settings, dense); seeds {args.seeds}; "
        f"{h.environment(args.threads, 'cpu')}; started {h.started_date(csv_path.with_suffix('.json'), args.resume)}."
    )


class Progress:
    """Runs jobs, appending each one's row, and prints the time per epoch so far and the hours left."""

    def __init__(self, runner: Runner, csv_path: Path):
        self.runner, self.csv_path = runner, csv_path
        self.started, self.epochs_done = time.time(), 0

    def run_all(self, jobs: list[dict], later: int) -> None:
        """Run ``jobs`` (``later``: epochs of a later phase, counted in the time left)."""
        remaining = sum(j["epochs"] for j in jobs) + later
        for i, j in enumerate(jobs, 1):
            row = self.runner.run(j)
            h.append_rows(self.csv_path, FIELDS, [{k: row[k] for k in FIELDS}])
            self.epochs_done += j["epochs"]
            remaining -= j["epochs"]
            per_epoch = (time.time() - self.started) / self.epochs_done
            h.print_progress(i, len(jobs), j["job"], f"acc {100 * row['accuracy']:.2f}%  "
                             f"{row['images_per_sec']:,.0f} img/s  {time.time() - self.started:,.0f}s elapsed, "
                             f"{per_epoch:,.0f}s per epoch, {remaining} epochs (about "
                             f"{per_epoch * remaining / 3600:.1f} h) left")  # fmt: skip


def dry_run(jobs: list[dict], args, seeds: list[int]) -> None:
    for j in jobs:
        print(f"{j['job']:<55} {j['epochs']} epochs")
    print(f"{len(jobs)} sweep jobs, {sum(j['epochs'] for j in jobs)} epochs; then the long phase: "
          f"{args.long_top + 2} settings x {len(seeds)} seeds x {args.long_epochs} epochs")  # fmt: skip


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.render:
        for csv_path in args.render:
            render(Path(csv_path), Path(args.readme) if args.readme else None)
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.candidates:
        measure_candidates(args)
        return
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    name = h.run_name("recipe", args.data, args.model, args.quick)
    args.work = args.work or str(Path("runs") / "recipe" / name)
    csv_path = Path(args.out) / f"{name}.csv"
    done = {r["job"] for r in read_rows(csv_path)} if args.resume else set()
    if args.dry_run:
        dry_run(h.select(sweep_jobs(seeds, args.epochs), done, args.only), args, seeds)
        return
    setup = setup_line(args, csv_path)
    h.start_csv(csv_path, FIELDS, args.resume)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    runner = Runner(args, h.quick_data(Path(args.work), 300, 500) if args.quick else args.data)
    h.write_meta(csv_path.with_suffix(".json"), h.recorded_command("recipe.py", argv), setup,
                 f"Training recipe of `pemn compress`: {args.model} on {args.data}")  # fmt: skip
    progress = Progress(runner, csv_path)
    long_epochs = (args.long_top + 2) * len(seeds) * args.long_epochs if args.long_top and args.long_epochs else 0
    sweep = h.select(sweep_jobs(seeds, args.epochs), done, args.only)
    print(f"sweep: {len(sweep)} jobs, {sum(j['epochs'] for j in sweep)} epochs; then at most {long_epochs} epochs "
          "in the long phase", flush=True)  # fmt: skip
    progress.run_all(sweep, later=long_epochs)
    rows = read_rows(csv_path)
    finished = {r["job"] for r in rows}
    if all(j["job"] in finished for j in sweep_jobs(seeds, args.epochs)):
        long = h.select(long_jobs(rows, seeds, args), done, args.only)
        print(f"long phase: {len(long)} jobs, {sum(j['epochs'] for j in long)} epochs", flush=True)
        progress.run_all(long, later=0)
    else:
        print("long phase skipped: the sweep is not complete in the CSV", flush=True)
    render(csv_path)


if __name__ == "__main__":
    main()
