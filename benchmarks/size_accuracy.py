"""Accuracy against real on-disk size: PEMN against the compression a user would otherwise pick.

For one model and one dataset, every point is a real file on disk, sized with the filesystem, and its
accuracy is measured by loading that file back into a fresh model and evaluating on the test set.

Rows (groups):

- ``dense``: the model trained normally, stored as safetensors fp32, fp16, and int8 weight-only
  quantization (symmetric, one fp32 scale per output channel; other tensors fp16).
- ``random pruning`` / ``magnitude pruning``: the paper's baselines, sparse networks trained from
  scratch with 90/92/94/96% of every conv/linear weight removed (random: a fixed random mask from the
  start; magnitude: gradual magnitude pruning, cubic schedule ending at 75% of training). Stored in a
  sparse safetensors file: each layer's positions as a bitmap coded exactly like `.pemn` masks (raw
  bits or Golomb-Rice, whichever is smaller), kept values fp16, other tensors fp16.
- ``pemn (paper setting)``: masks over fixed random weights as in the paper: Kaiming-normal values,
  no per-layer rescaling, density 0.5, fp32 leftovers, BatchNorm stored unfolded; strategies mask
  (every weight its own value), onelayer, mp, rp 1e-1 .. 1e-5.
- ``pemn improvement``: each improvement alone on top of the paper's rp 1e-3 (the reference):
  signed-constant values, per-layer rescaling, a learned rp value vector, distillation from the
  dense model, densities 0.3 and 0.1 (entropy-coded masks), fp16 leftovers, BatchNorm folded.
- ``pemn best``: everything that is on by default or helps, for onelayer and rp 1e-3 at densities
  0.5 / 0.3 / 0.1: signed-constant values, rescaling, distillation, (learned values for rp), fp16
  leftovers, BatchNorm folded.

Each row records method, settings, on-disk bytes, the ratio to the dense fp32 file, the paper's
formula ratio (PEMN rows: 1 bit per masked weight + 32 bits per stored value, BatchNorm not counted),
bits per weight (file bits over the model's parameter count), accuracy, training time and seed.
Groups whose differences are small (dense, the reference, improvements, best) run for every seed in
``--seeds``; the others for the first seed only. Outputs, named by task, model and device:
``benchmarks/results/size_accuracy_<task>_<model>_<device>.{csv,md,png}``. The CSV is appended
job by job, so ``--resume`` continues an interrupted run.

    python benchmarks/size_accuracy.py                        # full mode, convmixer_64_4 (about an hour, 1 core)
    python benchmarks/size_accuracy.py --model resnet20 --train-samples 6000 --seeds 0
    python benchmarks/size_accuracy.py --quick --out /tmp/q   # a tiny model in well under a minute
    python benchmarks/size_accuracy.py --render benchmarks/results/size_accuracy_fashion-mnist_resnet20_cpu.csv
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

import _harness as h
import torch

import pemn_compress as pemn
from pemn_compress.baselines import Pruning, load_artifact, save_dense, save_int8, save_sparse
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.fileformat.summary import summarize
from pemn_compress.train import evaluate

SPARSITIES = (0.90, 0.92, 0.94, 0.96)
RP_RATIOS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
BEST_DENSITIES = (0.5, 0.3, 0.1)
DISTILL_ALPHA, DISTILL_T = 0.5, 4.0  # the defaults of `pemn compress`
PAPER_MASK = dict(distribution="normal", rescale=False, density=0.5)
PAPER_STORAGE = dict(dense_dtype="float32", fold_batchnorm=False)
BEST_MASK = dict(distribution="signed_constant", rescale=True)
BEST_STORAGE = dict(dense_dtype="float16", fold_batchnorm=True)
FIELDS = [
    "job",
    "group",
    "method",
    "settings",
    "seed",
    "artifact",
    "bytes",
    "ratio_vs_fp32",
    "paper_ratio",
    "bits_per_weight",
    "bound_bytes",
    "unique_values",
    "accuracy",
    "train_seconds",
    "images_per_sec",
]
MULTI_SEED_GROUPS = ("dense", "pemn reference", "pemn improvement", "pemn best")
STORAGES = {  # per job kind: the .pemn files written from one trained model (label, save options, improvement row)
    "paper": [("fp32 leftovers", PAPER_STORAGE, "")],
    "best": [("fp16 leftovers, BN folded", BEST_STORAGE, "")],
    "reference": [
        ("fp32 leftovers", PAPER_STORAGE, ""),
        ("fp16 leftovers", dict(dense_dtype="float16", fold_batchnorm=False), "+ fp16 leftovers"),
        ("fp32 leftovers, BN folded", dict(dense_dtype="float32", fold_batchnorm=True), "+ BN folded"),
    ],
}
STORAGE_ONLY = tuple(label for _, _, label in STORAGES["reference"] if label)  # improvements without retraining


def ratio_label(ratio: float) -> str:
    return f"{ratio:.0e}".replace("e-0", "e-")


# ---------------------------------------------------------------------------------------------- jobs
def plan_jobs(seeds: list[int]) -> list[dict]:
    """Every training run, in an order where each distillation teacher is trained before its students."""
    jobs = []
    for i, seed in enumerate(seeds):
        first = i == 0

        def add(group, method, kind, first=first, seed=seed, **spec):
            if first or group in MULTI_SEED_GROUPS:
                jobs.append(
                    {
                        "group": group,
                        "method": method,
                        "kind": kind,
                        "seed": seed,
                        **spec,
                        "job": f"{group}|{method}|{seed}",
                    }
                )

        add("dense", "dense", "dense")
        reference = dict(strategy="rp", ratio=1e-3, **PAPER_MASK)
        add("pemn reference", "rp 1e-3 (paper setting)", "pemn", mask=reference, storage="reference")
        for how in ("random", "magnitude"):
            for sparsity in SPARSITIES:
                add(f"{how} pruning", f"{how} pruning {sparsity:.0%}", "prune", how=how, sparsity=sparsity)
        for strategy in ("dense", "onelayer", "mp"):
            add(
                "pemn (paper setting)",
                "mask" if strategy == "dense" else strategy,
                "pemn",
                mask=dict(strategy=strategy, ratio=None, **PAPER_MASK),
                storage="paper",
            )
        for ratio in RP_RATIOS:
            if ratio != 1e-3:  # rp 1e-3 in the paper's setting is the reference job
                add(
                    "pemn (paper setting)",
                    f"rp {ratio_label(ratio)}",
                    "pemn",
                    mask=dict(strategy="rp", ratio=ratio, **PAPER_MASK),
                    storage="paper",
                )
        for label, change in (
            ("+ signed-constant values", dict(distribution="signed_constant")),
            ("+ per-layer rescaling", dict(rescale=True)),
            ("+ learned value vector", dict(learn_values=True)),
            ("+ distillation", dict(distill=True)),
            ("density 0.3 (entropy-coded)", dict(density=0.3)),
            ("density 0.1 (entropy-coded)", dict(density=0.1)),
            ("+ permuted tiling (rp_mode rand)", dict(rp_mode="rand")),
        ):
            mask = dict(reference)
            distill = change.pop("distill", False)
            mask.update(change)
            add("pemn improvement", label, "pemn", mask=mask, storage="paper", distill=distill)
        for strategy, ratio, rp_mode in (("onelayer", None, "copy"), ("rp", 1e-3, "copy"), ("rp", 1e-3, "rand")):
            for density in BEST_DENSITIES:
                name = (
                    strategy if ratio is None else f"rp {ratio_label(ratio)}" + (" rand" if rp_mode == "rand" else "")
                )
                add(
                    "pemn best",
                    f"{name} d{density}",
                    "pemn",
                    storage="best",
                    distill=True,
                    mask=dict(
                        strategy=strategy,
                        ratio=ratio,
                        density=density,
                        learn_values=ratio is not None,
                        rp_mode=rp_mode,
                        **BEST_MASK,
                    ),
                )
    return jobs


def mask_settings(mask: dict) -> str:
    parts = [
        mask["strategy"] if mask.get("ratio") is None else f"rp {ratio_label(mask['ratio'])}",
        f"density {mask['density']}",
        mask["distribution"].replace("_", "-"),
        "rescale" if mask["rescale"] else "no rescale",
    ]
    if mask.get("rp_mode") == "rand":
        parts.append("permuted tiling")
    if mask.get("learn_values"):
        parts.append("learned values")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------ runner
class Bench:
    def __init__(self, args):
        self.args = args
        self.data = get_dataset(args.data)
        self.data = self.data.subset(args.train_samples or None, args.test_samples or None, seed=0)
        self.test = BatchLoader.from_dataset(self.data, "test", batch_size=1000)
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        reference = self.make_model()
        self.n_weights = sum(p.numel() for p in reference.parameters())
        fp32 = self.work / "reference_fp32.safetensors"
        save_dense(reference, fp32, torch.float32)
        self.fp32_bytes = os.path.getsize(fp32)  # the same for every seed: same architecture

    def make_model(self):
        return pemn.create_model(self.args.model, in_chans=self.data.in_chans, num_classes=self.data.num_classes)

    def train(self, model, seed: int, callbacks=(), teacher=None):
        a = self.args
        train = BatchLoader.from_dataset(
            self.data,
            "train",
            batch_size=a.batch_size,
            shuffle=True,
            seed=seed,
            crop_padding=2,
            hflip=True,
            drop_last=True,
        )
        config = pemn.TrainConfig(
            epochs=a.epochs,
            lr=a.lr,
            seed=seed,
            distill_alpha=DISTILL_ALPHA if teacher else 0.0,
            distill_temperature=DISTILL_T,
        )
        return pemn.Trainer(model, train, None, config, teacher=teacher, callbacks=callbacks, device="cpu").fit()

    def teacher(self, seed: int):
        path = self.work / f"dense_s{seed}_fp32.safetensors"
        if not path.exists():
            raise SystemExit(f"distillation needs the dense model of seed {seed} ({path}); run its dense job first")
        return load_artifact("dense", path, self.make_model)

    def measure(self, job: dict, fmt: str, path: Path, artifact: str, settings: str, result, extra=None) -> dict:
        model = load_artifact(fmt, path, self.make_model)
        _, acc = evaluate(model, self.test, device="cpu")
        size = os.path.getsize(path)
        row = {
            "job": job["job"],
            "group": job["group"],
            "method": job["method"],
            "settings": settings,
            "seed": job["seed"],
            "artifact": artifact,
            "bytes": size,
            "ratio_vs_fp32": self.fp32_bytes / size,
            "bits_per_weight": 8 * size / self.n_weights,
            "accuracy": acc,
            "train_seconds": result.train_seconds,
            "images_per_sec": result.images_per_sec,
            "paper_ratio": "",
            "bound_bytes": "",
            "unique_values": "",
        }
        return row | (extra or {})

    def run(self, job: dict) -> list[dict]:
        seed, stem = job["seed"], self.work / re.sub(r"[^A-Za-z0-9.]+", "_", job["job"])
        torch.manual_seed(seed)
        model = self.make_model()
        if job["kind"] == "dense":
            result = self.train(model, seed)
            rows = []
            for method, artifact, fmt, suffix, save in (
                ("dense fp32", "safetensors fp32", "dense", "fp32", lambda p: save_dense(model, p, torch.float32)),
                ("dense fp16", "safetensors fp16", "dense", "fp16", lambda p: save_dense(model, p, torch.float16)),
                ("int8 weight-only", "int8 per-channel + fp16 rest", "int8", "int8", lambda p: save_int8(model, p)),
            ):
                path = self.work / f"dense_s{seed}_{suffix}.safetensors"  # the fp32 one is the distillation teacher
                save(path)
                rows.append(self.measure(job, fmt, path, artifact, "trained weights", result) | {"method": method})
            return rows
        if job["kind"] == "prune":
            pruning = Pruning(model, job["how"], job["sparsity"], seed)
            result = self.train(model, seed, callbacks=[pruning])
            path = stem.with_suffix(".safetensors")
            save_sparse(model, path)
            return [
                self.measure(
                    job,
                    "sparse",
                    path,
                    "sparse: coded bitmap + fp16 values, fp16 rest",
                    f"{job['sparsity']:.0%} of conv/linear weights removed",
                    result,
                )
            ]
        config = pemn.MaskConfig(seed=seed, **job["mask"])
        pemn.mask_(model, config)
        result = self.train(model, seed, teacher=self.teacher(seed) if job.get("distill") else None)
        settings = mask_settings(job["mask"]) + (", distilled" if job.get("distill") else "")
        rows = []
        for artifact, storage, improvement in STORAGES[job["storage"]]:
            path = stem.with_name(stem.name + "_" + re.sub(r"[^a-z0-9]+", "_", artifact) + ".pemn")
            pemn.save(model, path, **storage)
            totals = summarize(pemn.read_pemn(path), path)["totals"]
            extra = {
                "paper_ratio": totals["paper_ratio"],
                "bound_bytes": totals["bound_bytes"],
                "unique_values": model.pemn_plan.unique_values,
            }
            row = self.measure(job, "pemn", path, ".pemn " + artifact, settings, result, extra)
            if improvement:  # storage-only improvements of the reference: their own rows
                row |= {"group": "pemn improvement", "method": improvement}
            rows.append(row)
        return rows


# ------------------------------------------------------------------------------------------ reports
FLOATS = ("ratio_vs_fp32", "bits_per_weight", "accuracy", "train_seconds", "images_per_sec", "paper_ratio",
          "bound_bytes")  # fmt: skip


def read_rows(csv_path: Path) -> list[dict]:
    return h.read_rows(csv_path, ints=("bytes", "seed"), floats=FLOATS, optional=FLOATS)


GROUP_ORDER = (
    "dense",
    "random pruning",
    "magnitude pruning",
    "pemn reference",
    "pemn (paper setting)",
    "pemn improvement",
    "pemn best",
)
METHOD_ORDER = (
    ["dense fp32", "dense fp16", "int8 weight-only"] + [j["method"] for j in plan_jobs([0])] + list(STORAGE_ONLY)
)


def display_order(group: str, method: str, artifact: str) -> tuple:
    """Report order: by group, then as planned (so rows appended by parallel or resumed runs sort alike)."""
    return (
        GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER),
        METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER),
        method,
        artifact,
    )


def aggregate(rows: list[dict]) -> list[dict]:
    """One entry per (group, method, artifact) over seeds: means, accuracy spread, seed count; in report order."""
    out: dict[tuple, list[dict]] = {}
    for row in rows:
        out.setdefault((row["group"], row["method"], row["artifact"]), []).append(row)
    result = []
    for (group, method, artifact), rs in sorted(out.items(), key=lambda item: display_order(*item[0])):
        accs = [r["accuracy"] for r in rs]
        mean = lambda k, rs=rs: statistics.fmean(r[k] for r in rs) if rs[0][k] is not None else None  # noqa: E731
        result.append(
            {
                "group": group,
                "method": method,
                "artifact": artifact,
                "settings": rs[0]["settings"],
                "n": len(rs),
                "seeds": [r["seed"] for r in rs],
                "accuracy": statistics.fmean(accs),
                "spread": statistics.stdev(accs) if len(accs) > 1 else None,
                "accuracies": accs,
                "bytes": mean("bytes"),
                "ratio_vs_fp32": mean("ratio_vs_fp32"),
                "paper_ratio": mean("paper_ratio"),
                "bits_per_weight": mean("bits_per_weight"),
                "bound_bytes": mean("bound_bytes"),
                "unique_values": rs[0]["unique_values"],
                "train_seconds": mean("train_seconds"),
                "images_per_sec": mean("images_per_sec"),
            }
        )
    return result


def fmt_acc(entry: dict) -> str:
    text = f"{100 * entry['accuracy']:.2f}"
    if entry["spread"] is not None:
        text += f" ± {100 * entry['spread']:.2f} (n={entry['n']})"
    return text


def find(entries, group, method):
    return next((e for e in entries if e["group"] == group and e["method"] == method), None)


def findings(entries: list[dict]) -> list[str]:
    """The sentences the issue asks for, computed from the aggregated rows."""
    dense = find(entries, "dense", "dense fp32")
    pemn_rows = [e for e in entries if e["group"].startswith("pemn")]
    baselines = [e for e in entries if e["group"].endswith("pruning")]
    lines = []
    at25 = [e for e in pemn_rows if e["ratio_vs_fp32"] >= 25]
    if at25:
        best = max(at25, key=lambda e: e["accuracy"])
        lines.append(
            f"- Best PEMN accuracy at >= 25x on-disk compression: **{100 * best['accuracy']:.2f}%** "
            f"({best['method']}, {best['artifact']}, {best['bytes']:,.0f} B, {best['ratio_vs_fp32']:.1f}x), "
            f"{100 * (dense['accuracy'] - best['accuracy']):.2f} points below dense fp32 "
            f"({100 * dense['accuracy']:.2f}%)."
        )
    else:
        top = max(pemn_rows, key=lambda e: e["ratio_vs_fp32"])
        lines.append(
            f"- No PEMN file reaches 25x here: the smallest is {top['bytes']:,.0f} B ({top['ratio_vs_fp32']:.1f}x, "
            f"{top['method']}); on a model this small the header and the leftovers outweigh the masks."
        )
    for b in sorted(baselines, key=lambda e: e["bytes"]):
        smaller = [e for e in pemn_rows if e["bytes"] <= b["bytes"]]
        if smaller:
            p = max(smaller, key=lambda e: e["accuracy"])
            lines.append(
                f"- vs {b['method']} ({b['bytes']:,.0f} B, {100 * b['accuracy']:.2f}%): best PEMN file no larger is "
                f"{p['method']} ({p['artifact']}) at {p['bytes']:,.0f} B, {100 * p['accuracy']:.2f}% "
                f"({100 * (p['accuracy'] - b['accuracy']):+.2f} points)."
            )
    trained = [e for e in pemn_rows if e["method"] not in STORAGE_ONLY and e["images_per_sec"]]
    plain = [e for e in trained if "distilled" not in e["settings"]]  # distillation also runs the teacher
    if plain and dense["images_per_sec"]:
        ratios = [e["images_per_sec"] / dense["images_per_sec"] for e in plain]
        lines.append(
            f"- Training throughput in this run (PEMN jobs without distillation vs the dense job): median "
            f"{statistics.median(ratios):.2f}x, range {min(ratios):.2f}x to {max(ratios):.2f}x "
            "(whole-epoch rates while other jobs shared the machine; benchmarks/train_throughput.py measures "
            "it side by side)."
        )
    reference = find(entries, "pemn reference", "rp 1e-3 (paper setting)")
    if reference:
        for e in entries:
            if e["group"] == "pemn improvement":
                lines.append(
                    f"- {e['method']}: {paired_delta(e, reference)}, {e['bytes'] - reference['bytes']:+,.0f} B "
                    f"against the reference rp 1e-3 paper setting ({100 * reference['accuracy']:.2f}%, "
                    f"{reference['bytes']:,.0f} B)."
                )
    return lines


def paired_delta(entry: dict, base: dict) -> str:
    """Accuracy change against ``base``, seed by seed (same seed = same data order and initial scores)."""
    deltas = list(h.paired(dict(zip(entry["seeds"], entry["accuracies"], strict=True)),
                           dict(zip(base["seeds"], base["accuracies"], strict=True))).values())
    if len(deltas) < 2:
        return f"{statistics.fmean(deltas):+.2f} points (one seed)"
    return (
        f"{statistics.fmean(deltas):+.2f} ± {statistics.stdev(deltas):.2f} points (paired over {len(deltas)} seeds: "
        + ", ".join(f"{d:+.2f}" for d in deltas)
        + ")"
    )


def write_markdown(entries: list[dict], md_path: Path, title: str, command: str, setup: str) -> None:
    dense = find(entries, "dense", "dense fp32")
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: {setup}",
        "",
        "Every size is a real file's size on disk; every accuracy was measured by loading that file into a fresh "
        "model (full test set of the subset, last epoch, no best-epoch picking). *ratio*: dense fp32 safetensors "
        "bytes over this file's bytes. *paper ratio*: the paper's formula (1 bit per masked weight + 32 bits per "
        "stored value; BatchNorm, biases and seed not counted). *bits/weight*: file bits over the model's parameter "
        "count. *bound*: information content of the masks plus dense leftovers (PEMN files). "
        "Accuracy with several seeds: mean ± standard deviation.",
        "",
        f"![accuracy vs on-disk size]({md_path.with_suffix('.png').name})",
        "",
        "| group | method | stored as | bytes | ratio | paper ratio | bits/weight | bound bytes | accuracy % "
        "| gap to dense (pts) | train s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        paper = "" if e["paper_ratio"] is None else f"{e['paper_ratio']:.1f}x"
        bound = "" if e["bound_bytes"] is None else f"{e['bound_bytes']:,.0f}"
        lines.append(
            f"| {e['group']} | {e['method']} | {e['artifact']} | {e['bytes']:,.0f} | "
            f"{e['ratio_vs_fp32']:.1f}x | {paper} | "
            f"{e['bits_per_weight']:.3f} | {bound} | {fmt_acc(e)} | {100 * (dense['accuracy'] - e['accuracy']):.2f} | "
            f"{e['train_seconds']:.0f} |"
        )
    lines += ["", "Settings of each row:", ""]
    seen = set()
    for e in entries:
        if (e["group"], e["method"]) not in seen:
            seen.add((e["group"], e["method"]))
            lines.append(f"- {e['group']} / {e['method']}: {e['settings']}")
    lines += ["", "## Findings (computed from the table)", ""] + findings(entries)
    md_path.write_text("\n".join(lines) + "\n")


def _paper_file(e: dict) -> bool:
    return e["group"] in ("pemn (paper setting)", "pemn reference") and e["artifact"] == ".pemn fp32 leftovers"


def _best(strategy: str):
    return lambda e: e["group"] == "pemn best" and e["method"].startswith(strategy + " d")


PLOT_SERIES = (  # (which entries, marker, label, connected, style)
    (lambda e: e["group"] == "dense", "ks", "dense fp32 / fp16 / int8", False, {}),
    (lambda e: e["group"] == "random pruning", "^", "random pruning 90-96% (sparse fp16)", True,
     {"color": "tab:gray"}),
    (lambda e: e["group"] == "magnitude pruning", "v", "magnitude pruning 90-96% (sparse fp16)", True,
     {"color": "tab:brown"}),
    (_paper_file, "o", "PEMN, paper setting (strategies)", False, {"color": "tab:blue"}),
    (lambda e: e["group"] == "pemn improvement", "D", "PEMN rp 1e-3, one improvement each", False,
     {"color": "tab:orange", "mfc": "none"}),
    *((_best(strategy), "o", f"PEMN best, {strategy}, density 0.5/0.3/0.1", True, {"color": color})
      for strategy, color in (("onelayer", "tab:green"), ("rp 1e-3", "tab:red"), ("rp 1e-3 rand", "tab:pink"))),
)  # fmt: skip


def plot(entries: list[dict], png_path: Path, title: str) -> bool:
    plt = h.pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    dense = find(entries, "dense", "dense fp32")
    ax.axhline(
        100 * dense["accuracy"], color="black", lw=0.8, ls="--", label=f"dense fp32 ({100 * dense['accuracy']:.2f}%)"
    )
    for select, style, label, connect, kw in PLOT_SERIES:
        points = [(e["bytes"], 100 * e["accuracy"], 100 * (e["spread"] or 0)) for e in entries if select(e)]
        h.error_series(ax, points, style, label, connect, **kw)
    bounds = [e for e in entries if e["group"] == "pemn best" and e["bound_bytes"]]
    if bounds:
        ax.plot([e["bound_bytes"] for e in bounds], [100 * e["accuracy"] for e in bounds], "x", color="tab:purple",
                label="information bound of those files (masks + leftovers)")  # fmt: skip
    labelled = [e for e in entries if e["group"] == "dense" or _paper_file(e)]
    for i, e in enumerate(sorted(labelled, key=lambda e: (e["bytes"], e["accuracy"]))):
        ax.annotate(e["method"].replace(" (paper setting)", "").replace(" weight-only", ""),
                    (e["bytes"], 100 * e["accuracy"]), fontsize=7, xytext=(5, 8 * (i % 3) - 8),
                    textcoords="offset points")  # staggered: clusters stay legible  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("file size on disk (bytes, log scale)")
    ax.set_ylabel("test accuracy (%)")
    floor = max(min(100 * e["accuracy"] for e in entries) - 2, 100 * dense["accuracy"] - 25)
    ax.set_ylim(floor, 100 * dense["accuracy"] + 2)  # collapsed rows would squash the rest: listed instead
    below = [e for e in entries if 100 * e["accuracy"] < floor]
    if below:
        ax.text(0.01, 0.02, "below the axis: " + "; ".join(f"{e['method']} {100 * e['accuracy']:.1f}%" for e in below),
                transform=ax.transAxes, fontsize=7, color="dimgray")  # fmt: skip
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    h.save_figure(fig, plt, png_path)
    return True


def render(csv_path: Path) -> None:
    """(Re)build the Markdown and the PNG of a run from its CSV and the run's .json (command, setup, title)."""
    md_path = csv_path.with_suffix(".md")
    meta = h.read_meta(csv_path.with_suffix(".json"))
    entries = aggregate(read_rows(csv_path))
    title = meta.get("title", csv_path.stem)
    write_markdown(
        entries, md_path, title, meta.get("command", "python benchmarks/size_accuracy.py"), meta.get("setup", "")
    )
    plotted = plot(entries, csv_path.with_suffix(".png"), title)
    print(f"wrote {md_path}" + (f" and {csv_path.with_suffix('.png')}" if plotted else ""))


README_BEGIN, README_END = "<!-- size_accuracy:begin -->", "<!-- size_accuracy:end -->"


def headline(entries: list[dict]) -> list[dict]:
    """The rows the README shows: dense formats, each baseline's best and 96% rows, the paper's rp 1e-3, PEMN best."""
    keep = [e for e in entries if e["group"] == "dense"]
    for group in ("random pruning", "magnitude pruning"):
        rows = [e for e in entries if e["group"] == group]
        if rows:
            best, sparsest = max(rows, key=lambda e: e["accuracy"]), rows[-1]
            keep += [best] + ([sparsest] if sparsest is not best else [])
    keep += [e for e in entries if e["group"] == "pemn reference" and e["artifact"] == ".pemn fp32 leftovers"]
    keep += [e for e in entries if e["group"] == "pemn best"]
    return keep


def update_readme(readme: Path, csv_paths: list[Path]) -> None:
    """Replace the README block between the size_accuracy markers with each run's plot, headline and findings."""
    block = [
        README_BEGIN,
        "",
        "Generated by `python benchmarks/size_accuracy.py --readme README.md --render "
        + " ".join(p.as_posix() for p in csv_paths)
        + "` from the committed results.",
        "",
    ]
    for csv_path in csv_paths:
        entries = aggregate(read_rows(csv_path))
        meta = h.read_meta(csv_path.with_suffix(".json"))
        dense = find(entries, "dense", "dense fp32")
        rel = csv_path.as_posix()
        block += [
            f"**{meta['title'].split(': ', 1)[-1]}** ([full report]({csv_path.with_suffix('.md').as_posix()}), "
            f"`{meta['command']}`)",
            "",
            f"![{meta['title']}]({csv_path.with_suffix('.png').as_posix()})",
            "",
            "| method | stored as | bytes | ratio vs fp32 | accuracy % | gap to dense (pts) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for e in headline(entries):
            block.append(
                f"| {e['method']} | {e['artifact']} | {e['bytes']:,.0f} | {e['ratio_vs_fp32']:.1f}x | {fmt_acc(e)} | "
                f"{100 * (dense['accuracy'] - e['accuracy']):.2f} |"
            )
        found = findings(entries)
        block += [""] + found[:1] + [line for line in found if line.startswith("- vs ") and " 96% (" in line]
        block += ["", f"<sub>source: {rel}</sub>", ""]
    block.append(README_END)
    h.replace_block(readme, README_BEGIN, README_END, block)
    print(f"updated {readme}")


# -------------------------------------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convmixer_64_4", help="zoo model name")
    parser.add_argument("--data", default="fashion-mnist", help="dataset spec (see `pemn compress --help`)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=12000, help="class-stratified training subset (0 = all)")
    parser.add_argument("--test-samples", type=int, default=0, help="test subset (0 = the full test set)")
    parser.add_argument("--lr", type=float, default=0.01, help="AdamW peak learning rate (cosine schedule)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; groups with small differences use all")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=str(h.RESULTS), help="folder for the CSV, Markdown and PNG")
    parser.add_argument(
        "--work", default=None, help="folder for the artifacts (default runs/size_accuracy/<task>_<model>)"
    )
    h.add_plan_options(parser, "group|method|seed")
    parser.add_argument(
        "--quick", action="store_true", help="tiny model, 2,000 images, 2 epochs, one seed: a smoke test"
    )
    parser.add_argument(
        "--render", metavar="CSV", nargs="+", help="only rebuild the Markdown and PNG from results CSVs"
    )
    parser.add_argument("--readme", metavar="README", help="with --render: also refresh the README's generated block")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.epochs, args.train_samples, args.test_samples, args.seeds = (
            "test_convmixer",
            2,
            2000,
            1000,
            "0",
        )
    return args


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.render:
        for csv_path in args.render:
            render(Path(csv_path))
        if args.readme:
            update_readme(Path(args.readme), [Path(c) for c in args.render])
        return
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    name = h.run_name("size_accuracy", args.data, args.model, args.quick)
    args.work = args.work or str(Path("runs") / "size_accuracy" / name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"{name}.csv"
    done = h.start_csv(csv_path, FIELDS, args.resume)
    bench = Bench(args)
    print(f"{len(plan_jobs(seeds))} training jobs planned; dense fp32 file {bench.fp32_bytes:,} B", flush=True)
    setup = (
        f"{args.model} on {args.data}: {len(bench.data.y_train):,} training images (class-stratified subset), "
        f"{len(bench.data.y_test):,} test images, {args.epochs} epochs, AdamW lr {args.lr}, cosine schedule, batch "
        f"{args.batch_size}, crop+flip augmentation; distillation alpha {DISTILL_ALPHA}, T {DISTILL_T}; "
        f"seeds {args.seeds}; {h.environment(args.threads, 'cpu')}; {h.today()}. "
        f"Dense fp32 file: {bench.fp32_bytes:,} B, {bench.n_weights:,} parameters."
    )
    h.write_meta(csv_path.with_suffix(".json"), h.recorded_command("size_accuracy.py", argv), setup,
                 f"Accuracy vs on-disk size: {args.model} on {args.data}")  # fmt: skip
    jobs = h.select(plan_jobs(seeds), done, args.only)
    started = time.time()
    for i, job in enumerate(jobs, 1):
        rows = bench.run(job)
        h.append_rows(csv_path, FIELDS, rows)
        for row in rows:
            print(f"[{i}/{len(jobs)}] {row['method']:<28} seed {row['seed']}  {row['bytes']:>9,} B  "
                  f"{row['ratio_vs_fp32']:6.1f}x  acc {100 * row['accuracy']:.2f}%  ({time.time() - started:,.0f}s)",
                  flush=True)  # fmt: skip
    render(csv_path)


if __name__ == "__main__":
    main()
