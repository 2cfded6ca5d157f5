"""Mask-training throughput against dense training of the same model, measured in one run, with
the masked overhead broken down by phase so that it can be optimized.

For each model, five variants are built from the same seed: ``dense`` (the plain model, its weights
trained), and PEMN masks over fixed weights with the strategies ``mask`` (strategy "dense"),
``onelayer``, ``mp`` and ``rp 1e-3`` (only scores, norms and biases train). Each trains with AdamW
(the parameters with ``requires_grad``) and cross-entropy on the same real Fashion-MNIST batches of
128, preloaded into memory so that no data loading is timed.

Timing, all with ``time.perf_counter``:

* The variants take turns: one round runs ``--warmup`` untimed steps then ``--steps`` timed steps of
  dense, then of mask, onelayer, mp, rp, and the round repeats ``--rounds`` times, so machine noise
  hits every variant alike. Each variant keeps its model and optimizer state across rounds; the
  warm-up steps at the start of every turn refill the caches the previous variant evicted.
* Throughput of a turn: images / summed step time; reported per variant is the median over rounds,
  and its ratio to dense's median from the same run (plus the range of the per-round ratios).
* Each timed step is split into forward (model + loss), backward (``loss.backward()``) and
  optimizer (``zero_grad`` + ``step``); the report gives the median of each over all timed steps.
  On CUDA the device is synchronized at every phase boundary (which costs a little throughput);
  on CPU the clock is read directly.
* Top-k is timed by calling ``topk_mask(layer.scores.detach(), layer.kept)`` for every masked layer
  (the same kthvalue selection the forward does), and "mask build" by computing the whole
  ``weight * topk_mask(...)`` product for every masked layer (``materialized_weight()``: the bank
  view times the scale, the top-k and the multiplication). Both run under ``no_grad``, ``--steps``
  times right after a variant's timed steps in each round, outside the throughput window. This was
  chosen over ``torch.profiler``: it needs no trace parsing, adds no profiler overhead to the timed
  steps, and attributes the time exactly to the package's own function. Both are part of the
  forward time; the forward's remaining overhead over dense is autograd bookkeeping for the
  straight-through path (``abs``, the multiply).

The design target (masked training at >= 0.95x dense throughput) is reported as met or not for
each masked variant. Writes ``benchmarks/results/train_throughput_<device>.{csv,md}``.

    python benchmarks/train_throughput.py                  # the committed run (about 8 minutes on one quiet core)
    python benchmarks/train_throughput.py --quick --out /tmp/tt   # a few seconds, a smoke test
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import _harness as h
import torch
import torch.nn.functional as F
from torch import nn

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.nn.topk import topk_mask
from pemn_compress.surgery import masked_layers

TARGET = 0.95  # the project design's minimum masked/dense training throughput (DESIGN section 7, raised 2026-12-07)
PHASES = ("step", "forward", "backward", "optimizer", "topk", "mask_build")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str  # the label in the report
    strategy: str | None  # MaskConfig strategy; None: dense weights, no mask
    ratio: float | None = None  # rp only


VARIANTS = (
    Variant("dense", None),
    Variant("mask", "dense"),
    Variant("onelayer", "onelayer"),
    Variant("mp", "mp"),
    Variant("rp 1e-3", "rp", 1e-3),
)


@dataclasses.dataclass
class Run:
    """One variant of one model: its model and optimizer, and the timings collected over rounds."""

    variant: Variant
    model: nn.Module
    optimizer: torch.optim.Optimizer
    layers: list  # the masked layers (empty for dense)
    trainable: int  # trainable parameter count
    round_ips: list = dataclasses.field(default_factory=list)  # images/second of each round
    times: dict = dataclasses.field(default_factory=lambda: {p: [] for p in PHASES})  # seconds per step


# ----------------------------------------------------------------------------------------------
# Setup


def load_batches(args, device: torch.device) -> tuple[list, object]:
    """``args.batches`` real Fashion-MNIST training batches, materialized on ``device`` up front."""
    data = get_dataset(args.data).subset(args.batches * args.batch_size, 1, seed=args.seed)
    loader = BatchLoader.from_dataset(
        data, "train", batch_size=args.batch_size, shuffle=True, seed=args.seed, drop_last=True, device=device
    )
    batches = [(x.contiguous(), y.contiguous()) for x, y in loader]
    return batches, data


def build_run(model_name: str, variant: Variant, args, data, device: torch.device) -> Run:
    """The model (fixed seed), masked for PEMN variants, and an AdamW over its trainable parameters."""
    torch.manual_seed(args.seed)
    model = pemn.create_model(
        model_name, in_chans=data.in_chans, num_classes=data.num_classes, img_size=data.img_size[0]
    )
    if variant.strategy is not None:
        config = pemn.MaskConfig(strategy=variant.strategy, ratio=variant.ratio, density=args.density, seed=args.seed)
        pemn.mask_(model, config)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    layers = [layer for _, layer in masked_layers(model)]
    return Run(variant, model, optimizer, layers, sum(p.numel() for p in params))


# ----------------------------------------------------------------------------------------------
# Timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict:
    """One training step; returns the seconds spent in forward, backward, optimizer and in total."""
    _sync(device)
    t0 = time.perf_counter()
    loss = F.cross_entropy(run.model(x), y)
    _sync(device)
    t1 = time.perf_counter()
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    _sync(device)
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0}


def time_mask_work(layers: list, device: torch.device) -> tuple[float, float]:
    """Seconds for one top-k over every masked layer, and for every layer's full ``weight * mask``."""
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        for layer in layers:
            topk_mask(layer.scores.detach(), layer.kept)
        _sync(device)
        t1 = time.perf_counter()
        for layer in layers:
            layer.materialized_weight()
        _sync(device)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def run_turn(run: Run, batches: list, args, device: torch.device) -> None:
    """One variant's turn in a round: warm-up, timed steps, then the top-k / mask-build timings."""
    for i in range(args.warmup):
        x, y = batches[i % len(batches)]
        train_step(run, x, y, device)
    step_seconds = 0.0
    for i in range(args.steps):
        x, y = batches[(args.warmup + i) % len(batches)]  # every variant sees the same batch sequence
        phases = train_step(run, x, y, device)
        step_seconds += phases["step"]
        for phase, seconds in phases.items():
            run.times[phase].append(seconds)
    run.round_ips.append(args.steps * args.batch_size / step_seconds)
    if run.layers:
        for _ in range(args.steps):
            topk_s, build_s = time_mask_work(run.layers, device)
            run.times["topk"].append(topk_s)
            run.times["mask_build"].append(build_s)


def bench_model(model_name: str, args, batches: list, data, device: torch.device) -> list[dict]:
    """All variants of one model, alternated over ``args.rounds`` rounds; one summary row per variant."""
    runs = [build_run(model_name, v, args, data, device) for v in VARIANTS if v.name in args.variants]
    for r in range(args.rounds):
        for run in runs:
            run_turn(run, batches, args, device)
        print(
            f"{model_name} round {r + 1}/{args.rounds}: "
            + "  ".join(f"{run.variant.name} {run.round_ips[-1]:,.0f}" for run in runs)
            + " img/s",
            flush=True,
        )
    dense = next((run for run in runs if run.variant.strategy is None), runs[0])
    return [summarize(model_name, run, dense) for run in runs]


def summarize(model_name: str, run: Run, dense: Run) -> dict:
    """Median throughput, its ratio to dense, and median milliseconds per phase for one variant."""
    ips = statistics.median(run.round_ips)
    dense_ips = statistics.median(dense.round_ips)
    per_round = [a / b for a, b in zip(run.round_ips, dense.round_ips, strict=True)]
    row = {
        "model": model_name,
        "variant": run.variant.name,
        "masked_layers": len(run.layers),
        "trainable_params": run.trainable,
        "images_per_sec": ips,
        "dense_images_per_sec": dense_ips,
        "ratio_to_dense": ips / dense_ips,
        "round_ratio_min": min(per_round),
        "round_ratio_max": max(per_round),
    }
    for phase in PHASES:
        values = run.times[phase]
        row[f"{phase}_ms"] = 1000 * statistics.median(values) if values else None
    return row


# ----------------------------------------------------------------------------------------------
# Reports


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def table_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| variant | trainable params | img/s (median) | ratio to dense | per-round ratios | step ms | forward ms "
        "| top-k ms | mask build ms | backward ms | optimizer ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['trainable_params']:,} | {r['images_per_sec']:,.0f} | {r['ratio_to_dense']:.2f} | "
            f"{r['round_ratio_min']:.2f}-{r['round_ratio_max']:.2f} | {_ms(r['step_ms'])} | {_ms(r['forward_ms'])} | "
            f"{_ms(r['topk_ms'])} | {_ms(r['mask_build_ms'])} | {_ms(r['backward_ms'])} | {_ms(r['optimizer_ms'])} |"
        )
    return lines


def conclusion_lines(rows: list[dict]) -> list[str]:
    """Per masked variant: the ratio against the target, and where the extra milliseconds go."""
    dense = next((r for r in rows if r["variant"] == "dense"), None)
    if dense is None:
        return []
    lines = []
    for r in rows:
        if r is dense:
            continue
        verdict = "met" if r["ratio_to_dense"] >= TARGET else "NOT met"
        extra = {p: r[f"{p}_ms"] - dense[f"{p}_ms"] for p in ("step", "forward", "backward", "optimizer")}
        lines.append(
            f"- {r['variant']}: {r['ratio_to_dense']:.2f}x dense (target >= {TARGET}x: {verdict}); "
            f"{extra['step']:+.2f} ms/step over dense = forward {extra['forward']:+.2f} "
            f"(weight*mask of all layers {r['mask_build_ms']:.2f}, of which top-k {r['topk_ms']:.2f}), "
            f"backward {extra['backward']:+.2f}, optimizer {extra['optimizer']:+.2f}"
        )
    return lines


def write_markdown(rows: list[dict], args, path: Path, command: str, device: torch.device, load: tuple) -> None:
    lines = [
        f"# Mask training vs dense training throughput ({device.type})",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: models {args.models}; {args.rounds} rounds x ({args.warmup} warm-up + {args.steps} timed steps) per "
        f"variant, variants alternated within each round; AdamW lr {args.lr}, batch {args.batch_size}, density "
        f"{args.density}, {args.batches} preloaded {args.data} batches, seed {args.seed}; device {device}, "
        f"{h.environment(torch.get_num_threads())}; {h.today()}; load average {load[0]:.2f} at start, "
        f"{load[1]:.2f} at end.",
        "",
        "img/s: median over rounds of (images / summed step time). Phase columns: median over all timed steps. "
        "Top-k (every masked layer's kthvalue mask) and mask build (every layer's whole weight * mask) are timed "
        "separately, outside the steps; both are part of the forward. Medians do not add up exactly.",
    ]
    for model_name in dict.fromkeys(r["model"] for r in rows):
        model_rows = [r for r in rows if r["model"] == model_name]
        lines += ["", f"## {model_name}", "", *table_lines(model_rows), "", *conclusion_lines(model_rows)]
    path.write_text("\n".join(lines) + "\n")


def print_summary(rows: list[dict]) -> None:
    print(
        f"{'model':<16} {'variant':<9} {'img/s':>8} {'ratio':>6} {'step':>7} {'fwd':>7} {'topk':>6} "
        f"{'build':>6} {'bwd':>7} {'opt':>6}  (ms)"
    )
    for r in rows:
        print(
            f"{r['model']:<16} {r['variant']:<9} {r['images_per_sec']:8,.0f} {r['ratio_to_dense']:6.2f} "
            f"{_ms(r['step_ms']):>7} {_ms(r['forward_ms']):>7} {_ms(r['topk_ms']):>6} {_ms(r['mask_build_ms']):>6} "
            f"{_ms(r['backward_ms']):>7} {_ms(r['optimizer_ms']):>6}"
        )
    for model_name in dict.fromkeys(r["model"] for r in rows):
        for line in conclusion_lines([r for r in rows if r["model"] == model_name]):
            print(f"{model_name}: {line[2:]}")


# ----------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="convmixer_64_4,resnet20")
    parser.add_argument(
        "--variants",
        default=",".join(v.name for v in VARIANTS),
        help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS),
    )
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each variant's timed steps")
    parser.add_argument("--batches", type=int, default=8, help="distinct batches preloaded (cycled)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="test_convmixer, 2 rounds of 4 steps: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.rounds, args.steps, args.warmup, args.batches = "test_convmixer", 2, 4, 1, 2
    args.variants = [v.strip() for v in args.variants.split(",")]
    unknown = set(args.variants) - {v.name for v in VARIANTS}
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {[v.name for v in VARIANTS]}")
    if "dense" not in args.variants:
        parser.error("the dense variant is the baseline every ratio is measured against: keep it in --variants")
    if min(args.rounds, args.steps, args.batches, args.batch_size) < 1 or args.warmup < 0:
        parser.error("--rounds, --steps, --batches and --batch-size must be >= 1, --warmup >= 0")
    return args


def main(argv=None) -> Path:
    """Run the benchmark; returns the path stem of the written ``.csv`` / ``.md`` pair."""
    from pemn_compress.api import resolve_device

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    batches, data = load_batches(args, device)
    rows = []
    for model_name in args.models.split(","):
        rows += bench_model(model_name.strip(), args, batches, data, device)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print_summary(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"train_throughput{'_quick' if args.quick else ''}_{device.type}"
    command = " ".join(["python benchmarks/train_throughput.py", *(shlex.quote(a) for a in argv)])
    write_csv(rows, stem.with_suffix(".csv"))
    write_markdown(rows, args, stem.with_suffix(".md"), command, device, (load_start, load_end))
    print(f"wrote {stem}.csv and {stem}.md")
    return stem


if __name__ == "__main__":
    main()
