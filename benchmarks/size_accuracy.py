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
import csv
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.fileformat.codecs import MaskCoding, decode_mask, encode_mask
from pemn_compress.fileformat.summary import summarize
from pemn_compress.nn.topk import kept_count
from pemn_compress.surgery import maskable_layers
from pemn_compress.train import Callback, evaluate

RESULTS = Path(__file__).parent / "results"
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


# ---------------------------------------------------------------------------------------- pruning
class Pruning(Callback):
    """Keeps every conv/linear weight of a dense model at a growing (magnitude) or fixed (random) sparsity.

    Random: one uniformly random mask per layer drawn before the first step. Magnitude: gradual
    magnitude pruning (Zhu & Gupta, 2017): sparsity s_t = s (1 - (1 - t / T)^3), T = 75% of the
    steps, the smallest |w| of each layer removed every ``every`` steps. Pruned weights are zeroed
    after every optimizer step, so they stay zero whatever AdamW's momentum does.
    """

    def __init__(self, model: torch.nn.Module, how: str, sparsity: float, seed: int):
        self.layers = [m for _, m in maskable_layers(model)]
        self.how, self.sparsity, self.seed = how, sparsity, seed
        self.masks = [torch.ones_like(m.weight, dtype=torch.bool) for m in self.layers]

    def _set(self, sparsity: float, random: bool) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        for i, layer in enumerate(self.layers):
            w = layer.weight.detach()
            keep = kept_count(1.0 - sparsity, w.numel())
            order = torch.randperm(w.numel(), generator=gen) if random else w.abs().flatten().argsort(descending=True)
            mask = torch.zeros(w.numel(), dtype=torch.bool)
            mask[order[:keep]] = True
            self.masks[i] = mask.view_as(w)

    @torch.no_grad()
    def _apply(self) -> None:
        for layer, mask in zip(self.layers, self.masks, strict=True):
            layer.weight.mul_(mask)

    def on_fit_start(self, trainer) -> None:
        self.end = max(1, int(0.75 * trainer.total_steps))
        self.every = max(1, self.end // 40)
        if self.how == "random":
            self._set(self.sparsity, random=True)
        self._apply()

    def on_batch_end(self, trainer, batch, loss, correct, size) -> None:
        step = trainer.step
        if self.how == "magnitude" and step <= self.end and (step % self.every == 0 or step == self.end):
            self._set(self.sparsity * (1.0 - (1.0 - step / self.end) ** 3), random=False)
        self._apply()


# --------------------------------------------------------------------------------------- artifacts
def _leftovers(state: dict, skip: set[str]) -> dict[str, torch.Tensor]:
    """Every state-dict tensor not in ``skip``, floating ones as fp16; BatchNorm step counters dropped."""
    return {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in state.items()
        if k not in skip and not k.endswith("num_batches_tracked")
    }


def save_dense(model, path: Path, dtype: torch.dtype) -> None:
    save_file(
        {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}, path
    )


def _split(model) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(conv/linear weights by state-dict key, every other tensor as ``_leftovers`` stores it)."""
    weights = {f"{name}.weight": m.weight.detach() for name, m in maskable_layers(model)}
    return weights, _leftovers(model.state_dict(), set(weights))


def save_int8(model, path: Path) -> None:
    weights, tensors = _split(model)
    for key, w in weights.items():
        scale = w.abs().flatten(1).amax(dim=1).clamp_min(1e-12) / 127.0
        shape = (-1,) + (1,) * (w.ndim - 1)
        tensors[key + ".int8"] = torch.round(w / scale.view(shape)).clamp(-127, 127).to(torch.int8).contiguous()
        tensors[key + ".scale"] = scale.float().contiguous()
    save_file(tensors, path)


def save_sparse(model, path: Path) -> None:
    weights, tensors = _split(model)
    index = {}
    for key, w in weights.items():
        mask = (w != 0).numpy().reshape(-1)
        coded = encode_mask(mask)
        tensors[key + ".mask"] = torch.from_numpy(np.ascontiguousarray(coded.data))
        tensors[key + ".values"] = w.reshape(-1)[torch.from_numpy(mask)].half().contiguous()
        index[key] = dataclasses.asdict(coded.coding)
    save_file(tensors, path, metadata={"masks": json.dumps(index, separators=(",", ":"))})


def load_artifact(fmt: str, path: Path, make_model) -> torch.nn.Module:
    """A fresh model holding the weights stored in ``path`` (fp32, eval mode)."""
    if fmt == "pemn":
        return pemn.load(path, device="cpu").eval()
    model = make_model()
    state = model.state_dict()
    stored = load_file(path)
    if fmt == "sparse":
        with safe_open(path, "pt") as fh:
            index = json.loads(fh.metadata()["masks"])
        for key, entry in index.items():
            mask = decode_mask(stored.pop(key + ".mask").numpy(), state[key].numel(), MaskCoding(**entry), key)
            w = torch.zeros(state[key].numel())
            w[torch.from_numpy(mask)] = stored.pop(key + ".values").float()
            stored[key] = w.view_as(state[key])
    elif fmt == "int8":
        for key in [k[: -len(".int8")] for k in stored if k.endswith(".int8")]:
            q, scale = stored.pop(key + ".int8"), stored.pop(key + ".scale")
            stored[key] = q.float() * scale.view((-1,) + (1,) * (q.ndim - 1))
    for key, value in state.items():  # counters the compact formats do not store
        if key.endswith("num_batches_tracked"):
            stored.setdefault(key, value)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in stored.items()})
    return model.eval()


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
def read_rows(csv_path: Path) -> list[dict]:
    rows = []
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            for key in ("bytes", "seed"):
                row[key] = int(row[key])
            for key in (
                "ratio_vs_fp32",
                "bits_per_weight",
                "accuracy",
                "train_seconds",
                "images_per_sec",
                "paper_ratio",
                "bound_bytes",
            ):
                row[key] = float(row[key]) if row[key] != "" else None
            rows.append(row)
    return rows


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
    base_acc = dict(zip(base["seeds"], base["accuracies"], strict=True))
    pairs = zip(entry["seeds"], entry["accuracies"], strict=True)
    deltas = [100 * (a - base_acc[s]) for s, a in pairs if s in base_acc]
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


def plot(entries: list[dict], png_path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plots]'): no PNG written", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    dense = find(entries, "dense", "dense fp32")
    ax.axhline(
        100 * dense["accuracy"], color="black", lw=0.8, ls="--", label=f"dense fp32 ({100 * dense['accuracy']:.2f}%)"
    )

    def series(select, style, label, connect=False, **kw):
        pts = sorted((e for e in entries if select(e)), key=lambda e: e["bytes"])
        if not pts:
            return
        xs, ys = [e["bytes"] for e in pts], [100 * e["accuracy"] for e in pts]
        errs = [100 * (e["spread"] or 0) for e in pts]
        ax.errorbar(
            xs,
            ys,
            yerr=errs if any(errs) else None,
            fmt=style,
            ls="-" if connect else "none",
            label=label,
            capsize=2,
            ms=6,
            **kw,
        )

    series(lambda e: e["group"] == "dense", "ks", "dense fp32 / fp16 / int8")
    series(
        lambda e: e["group"] == "random pruning",
        "^",
        "random pruning 90-96% (sparse fp16)",
        connect=True,
        color="tab:gray",
    )
    series(
        lambda e: e["group"] == "magnitude pruning",
        "v",
        "magnitude pruning 90-96% (sparse fp16)",
        connect=True,
        color="tab:brown",
    )
    series(
        lambda e: e["group"] in ("pemn (paper setting)", "pemn reference") and e["artifact"] == ".pemn fp32 leftovers",
        "o",
        "PEMN, paper setting (strategies)",
        color="tab:blue",
    )
    series(
        lambda e: e["group"] == "pemn improvement",
        "D",
        "PEMN rp 1e-3, one improvement each",
        color="tab:orange",
        mfc="none",
    )
    for strategy, color in (("onelayer", "tab:green"), ("rp 1e-3", "tab:red"), ("rp 1e-3 rand", "tab:pink")):
        series(
            lambda e, s=strategy: e["group"] == "pemn best" and e["method"].startswith(s + " d"),
            "o",
            f"PEMN best, {strategy}, density 0.5/0.3/0.1",
            connect=True,
            color=color,
        )
    bounds = [e for e in entries if e["group"] == "pemn best" and e["bound_bytes"]]
    if bounds:
        ax.plot(
            [e["bound_bytes"] for e in bounds],
            [100 * e["accuracy"] for e in bounds],
            "x",
            color="tab:purple",
            label="information bound of those files (masks + leftovers)",
        )
    labelled = [
        e
        for e in entries
        if e["group"] == "dense"
        or (e["group"] in ("pemn (paper setting)", "pemn reference") and e["artifact"] == ".pemn fp32 leftovers")
    ]
    for i, e in enumerate(sorted(labelled, key=lambda e: (e["bytes"], e["accuracy"]))):
        ax.annotate(
            e["method"].replace(" (paper setting)", "").replace(" weight-only", ""),
            (e["bytes"], 100 * e["accuracy"]),
            fontsize=7,
            xytext=(5, 8 * (i % 3) - 8),
            textcoords="offset points",
        )  # staggered: clusters stay legible
    ax.set_xscale("log")
    ax.set_xlabel("file size on disk (bytes, log scale)")
    ax.set_ylabel("test accuracy (%)")
    floor = max(min(100 * e["accuracy"] for e in entries) - 2, 100 * dense["accuracy"] - 25)
    ax.set_ylim(floor, 100 * dense["accuracy"] + 2)  # collapsed rows would squash the rest: listed instead
    below = [e for e in entries if 100 * e["accuracy"] < floor]
    if below:
        ax.text(
            0.01,
            0.02,
            "below the axis: " + "; ".join(f"{e['method']} {100 * e['accuracy']:.1f}%" for e in below),
            transform=ax.transAxes,
            fontsize=7,
            color="dimgray",
        )
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return True


def render(csv_path: Path) -> None:
    """(Re)build the Markdown and the PNG of a run from its CSV and the run's .json (command, setup, title)."""
    md_path = csv_path.with_suffix(".md")
    meta_path = csv_path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
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
        meta = json.loads(csv_path.with_suffix(".json").read_text())
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
    replace_block(readme, README_BEGIN, README_END, block)
    print(f"updated {readme}")


def replace_block(readme: Path, begin: str, end: str, block: list[str]) -> None:
    """Replace the README's lines from the ``begin`` marker to the ``end`` marker (both included) by
    ``block`` (which starts and ends with them); refuse a README without both markers."""
    text = readme.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{readme} has no {begin} ... {end} block to fill")
    head, rest = text.split(begin, 1)
    readme.write_text(head + "\n".join(block) + rest.split(end, 1)[1])


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
    parser.add_argument("--out", default=str(RESULTS), help="folder for the CSV, Markdown and PNG")
    parser.add_argument(
        "--work", default=None, help="folder for the artifacts (default runs/size_accuracy/<task>_<model>)"
    )
    parser.add_argument("--resume", action="store_true", help="skip the jobs already in the CSV")
    parser.add_argument("--only", metavar="REGEX", help="run only the jobs whose id (group|method|seed) matches")
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
    task = args.data.replace(":", "_").replace("/", "_")
    name = f"size_accuracy{'_quick' if args.quick else ''}_{task}_{args.model}_cpu"
    args.work = args.work or str(Path("runs") / "size_accuracy" / name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"{name}.csv"
    done = {row["job"] for row in read_rows(csv_path)} if args.resume and csv_path.exists() else set()
    if not done:
        with open(csv_path, "w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=FIELDS).writeheader()
    bench = Bench(args)
    recorded = [
        a for i, a in enumerate(argv) if a not in ("--resume", "--only") and (i == 0 or argv[i - 1] != "--only")
    ]
    command = "python benchmarks/size_accuracy.py " + " ".join(
        shlex.quote(a) for a in recorded
    )  # the whole run's command
    print(f"{len(plan_jobs(seeds))} training jobs planned; dense fp32 file {bench.fp32_bytes:,} B", flush=True)
    setup = (
        f"{args.model} on {args.data}: {len(bench.data.y_train):,} training images (class-stratified subset), "
        f"{len(bench.data.y_test):,} test images, {args.epochs} epochs, AdamW lr {args.lr}, cosine schedule, batch "
        f"{args.batch_size}, crop+flip augmentation; distillation alpha {DISTILL_ALPHA}, T {DISTILL_T}; "
        f"seeds {args.seeds}; "
        f"cpu, torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s); "
        f"{datetime.date.today().isoformat()}. Dense fp32 file: {bench.fp32_bytes:,} B, {bench.n_weights:,} parameters."
    )
    csv_path.with_suffix(".json").write_text(
        json.dumps(
            {
                "command": command.strip(),
                "setup": setup,
                "title": f"Accuracy vs on-disk size: {args.model} on {args.data}",
            },
            indent=1,
        )
    )
    jobs = [j for j in plan_jobs(seeds) if j["job"] not in done and (not args.only or re.search(args.only, j["job"]))]
    started = time.time()
    for i, job in enumerate(jobs, 1):
        rows = bench.run(job)
        with open(csv_path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        for row in rows:
            print(
                f"[{i}/{len(jobs)}] {row['method']:<28} seed {row['seed']}  {row['bytes']:>9,} B  "
                f"{row['ratio_vs_fp32']:6.1f}x  "
                f"acc {100 * row['accuracy']:.2f}%  ({time.time() - started:,.0f}s)",
                flush=True,
            )
    render(csv_path)


if __name__ == "__main__":
    main()
