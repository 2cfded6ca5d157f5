"""Reproduce the PEMN paper's strategy table on Fashion-MNIST, measured in one run.

Rows: the dense model with trained weights; then masks over fixed random weights with the
strategies dense ("mask"), onelayer, mp and rp at ratios 1e-1 .. 1e-5; for both value distributions
(Kaiming normal, signed Kaiming constant) and, for mp/rp, per-layer rescaling on and off (off is the
paper's setting). Every row uses the same model, data, recipe and seed. Writes
``benchmarks/results/strategies_<dataset>_<model>_<device>.{csv,md}``.

    python benchmarks/strategies.py                   # the committed run (about 45 minutes on 2 CPU cores)
    python benchmarks/strategies.py --quick           # a couple of minutes, a smoke test
"""

from __future__ import annotations

import argparse
import csv
import shlex
import statistics
import sys
import time
from pathlib import Path

import _harness as h
import torch

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.surgery import maskable_layers

# The paper's CIFAR-10 ConvMixer-256/6 accuracies (%), for comparing the shape of the curve.
PAPER = {
    "dense weights": 94.01,
    "mask": 89.43,
    "onelayer": 88.93,
    "mp": 88.98,
    "rp 1e-3": 88.51,
    "rp 1e-4": 85.36,
    "rp 1e-5": 80.20,
}
RATIOS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def rows_to_run(distributions):
    yield {"method": "dense weights", "strategy": "-", "ratio": None, "distribution": "-", "rescale": None}
    for dist in distributions:
        yield {"method": "mask", "strategy": "dense", "ratio": None, "distribution": dist, "rescale": True}
        yield {"method": "onelayer", "strategy": "onelayer", "ratio": None, "distribution": dist, "rescale": True}
        for rescale in (False, True):
            yield {"method": "mp", "strategy": "mp", "ratio": None, "distribution": dist, "rescale": rescale}
            for ratio in RATIOS:
                yield {
                    "method": f"rp {ratio:.0e}".replace("e-0", "e-"),
                    "strategy": "rp",
                    "ratio": ratio,
                    "distribution": dist,
                    "rescale": rescale,
                }


def run_one(row, args, data, device) -> dict:
    torch.manual_seed(args.seed)
    model = pemn.create_model(args.model, in_chans=data.in_chans, num_classes=data.num_classes)
    unique = sum(m.weight.numel() for _, m in maskable_layers(model))  # dense: every weight is its own value
    if row["strategy"] != "-":
        config = pemn.MaskConfig(
            density=args.density,
            strategy=row["strategy"],
            ratio=row["ratio"],
            rp_mode=args.rp_mode,
            distribution=row["distribution"],
            rescale=row["rescale"],
            seed=args.seed,
        )
        pemn.mask_(model, config)
        unique = model.pemn_plan.unique_values
    train = BatchLoader.from_dataset(
        data,
        "train",
        batch_size=args.batch_size,
        shuffle=True,
        seed=args.seed,
        crop_padding=2,
        hflip=True,
        drop_last=True,
        device=device,
    )
    test = BatchLoader.from_dataset(data, "test", batch_size=1000, device=device)
    trainer = pemn.Trainer(
        model, train, test, pemn.TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed), device=device
    )
    result = trainer.fit()
    return row | {
        "unique_values": unique,
        "accuracy": result.final_acc,
        "images_per_sec": result.images_per_sec,
        "train_seconds": result.train_seconds,
    }


def write_reports(rows, args, path_stem: Path, command: str, device: str) -> None:
    fields = [
        "method",
        "strategy",
        "ratio",
        "distribution",
        "rescale",
        "unique_values",
        "accuracy",
        "gap_to_dense",
        "images_per_sec",
        "train_seconds",
    ]
    dense_acc = rows[0]["accuracy"]
    for row in rows:
        row["gap_to_dense"] = dense_acc - row["accuracy"]
    with open(path_stem.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if k in fields})
    dense_ips = rows[0]["images_per_sec"]
    lines = [
        f"# PEMN strategies on {args.data}: {args.model}",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: {args.epochs} epochs, {len(rows)} runs, {args.train_samples or 'all'} training images, full test set, "
        f"AdamW lr {args.lr}, cosine schedule, batch {args.batch_size}, density {args.density}, "
        f"rp mode {args.rp_mode}, "
        f"seed {args.seed}; device {device}, {h.environment(torch.get_num_threads())}; {h.today()}.",
        "Accuracy is the test accuracy after the last epoch (no best-epoch picking).",
        "",
        "| method | distribution | rescale | unique values | accuracy % | gap to dense (pts) | paper CIFAR-10 % "
        "| paper gap (pts) | train img/s | ratio to dense img/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        paper = PAPER.get(row["method"])
        paper_gap = f"{PAPER['dense weights'] - paper:.2f}" if paper is not None else ""
        rescale = "" if row["rescale"] is None else ("on" if row["rescale"] else "off (paper)")
        lines.append(
            f"| {row['method']} | {row['distribution']} | {rescale} | {row['unique_values']:,} | "
            f"{100 * row['accuracy']:.2f} | "
            f"{100 * row['gap_to_dense']:.2f} | {'' if paper is None else f'{paper:.2f}'} | {paper_gap} | "
            f"{row['images_per_sec']:,.0f} | {row['images_per_sec'] / dense_ips:.2f} |"
        )
    masked = [r for r in rows[1:]]
    best = max(masked, key=lambda r: r["accuracy"])
    paper_best_masked = max(v for k, v in PAPER.items() if k != "dense weights")
    ips_ratios = [r["images_per_sec"] / dense_ips for r in masked]
    worst_rp = [r for r in masked if r["strategy"] == "rp" and r["ratio"] == min(RATIOS)]
    lines += [
        "",
        "## Reading it against the paper",
        "",
        f"- Best masked row: {best['method']} ({best['distribution']}, rescale {best['rescale']}) at "
        f"{100 * best['accuracy']:.2f}%, {100 * best['gap_to_dense']:.2f} points below dense weights "
        f"(the paper's smallest gap: {PAPER['dense weights'] - paper_best_masked:.2f} "
        "points, for mask).",
        "- Smallest vector (rp 1e-5): "
        + ", ".join(
            f"{r['distribution']} rescale {r['rescale']}: {100 * r['accuracy']:.2f}% ({r['unique_values']} values)"
            for r in worst_rp
        )
        + f" (paper: {PAPER['rp 1e-5']:.2f}%, {PAPER['dense weights'] - PAPER['rp 1e-5']:.2f} points below dense).",
        f"- Masked training throughput relative to dense training: median "
        f"{statistics.median(ips_ratios):.2f}x, range {min(ips_ratios):.2f}x to {max(ips_ratios):.2f}x "
        "(same model, same run, one thread; single runs on a shared machine are noisy).",
        "",
        "The paper's numbers are CIFAR-10 with ConvMixer-256/6 trained for many epochs; ours are Fashion-MNIST with a "
        "small model trained for a few epochs on 2 CPU cores, so compare the *shape* of the curve (how much each "
        "strategy loses relative to dense), not the absolute values.",
    ]
    path_stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def render(csv_path: Path, args) -> None:
    """Re-render the Markdown of a finished run from its CSV, keeping its recorded command line."""
    md_path = csv_path.with_suffix(".md")
    old = md_path.read_text().splitlines() if md_path.exists() else []
    command = next(
        (line.split("`")[1] for line in old if line.startswith("Command: `")), "python benchmarks/strategies.py"
    )
    setup = next((line for line in old if line.startswith("Setup: ")), None)
    rows = []
    with open(csv_path) as fh:
        for row in csv.DictReader(fh):
            row["ratio"] = float(row["ratio"]) if row["ratio"] else None
            row["rescale"] = None if row["rescale"] == "" else row["rescale"] == "True"
            for key in ("unique_values",):
                row[key] = int(row[key])
            for key in ("accuracy", "images_per_sec", "train_seconds"):
                row[key] = float(row[key])
            rows.append(row)
    write_reports(rows, args, csv_path.with_suffix(""), command, "cpu")
    if setup:  # the setup line describes the original run, not this re-render
        lines = md_path.read_text().splitlines()
        lines = [setup if line.startswith("Setup: ") else line for line in lines]
    lines = md_path.read_text().splitlines() if not setup else lines
    note = (
        f"Report text re-rendered from the CSV with `python benchmarks/strategies.py --render {csv_path.as_posix()}`."
    )
    md_path.write_text("\n".join(lines + ["", note]) + "\n")
    print(f"re-rendered {md_path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convmixer_64_4")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-samples", type=int, default=12000, help="stratified subset size (0 = all)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--rp-mode", default="rand", choices=["copy", "rand"])
    parser.add_argument("--distributions", default="normal,signed_constant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is robust when other jobs share the cores)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images, normal values only")
    parser.add_argument("--render", metavar="CSV", help="rebuild the Markdown report from a results CSV (no training)")
    args = parser.parse_args(argv)
    if args.render:
        render(Path(args.render), args)
        return
    if args.quick:
        args.epochs, args.train_samples, args.distributions = 1, 2000, "normal"
    from pemn_compress.api import resolve_device

    device = str(resolve_device(args.device))
    torch.set_num_threads(args.threads)
    data = get_dataset(args.data)
    if args.train_samples:
        data = data.subset(args.train_samples, None, seed=args.seed)
    rows = []
    plan = list(rows_to_run(args.distributions.split(",")))
    started = time.time()
    for i, row in enumerate(plan, 1):
        result = run_one(row, args, data, device)
        rows.append(result)
        print(
            f"[{i}/{len(plan)}] {row['method']:<14} {row['distribution']:<16} rescale={row['rescale']!s:<5} "
            f"acc={100 * result['accuracy']:.2f}% unique={result['unique_values']:,} "
            f"{result['images_per_sec']:,.0f} img/s  ({time.time() - started:,.0f}s)",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"strategies{'_quick' if args.quick else ''}_{args.data}_{args.model}_{device.split(':')[0]}"
    command = "python benchmarks/strategies.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    write_reports(rows, args, stem, command.strip(), device)
    print(f"wrote {stem}.csv and {stem}.md")


if __name__ == "__main__":
    main()
