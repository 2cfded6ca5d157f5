"""Does ``pemn compress --target-size`` ever write a file over its budget, and how much does it leave unused?

For each model, the budgets are a grid from the smallest file the model can make (what the
unreachable-budget error reports) to the file of the default density (0.5, no target). Each budget
is a short real run (1 epoch on a few hundred Fashion-MNIST images, one thread) through the same
``compress`` as the command line; the table gives the budget, the density chosen before training,
the file's size on disk, the slack (budget - file) and whether the file is over. Models: zoo models
and a user model defined in this script (a ``module:function`` factory). The files are written to a
temporary folder, or kept in ``--work DIR`` (one ``<model>_b<budget>.pemn`` per budget).

    python benchmarks/target_size.py
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shlex
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import _harness as h
import numpy as np
from torch import nn

import pemn_compress as pemn
from pemn_compress.data import get_dataset
from pemn_compress.errors import ConfigError
from pemn_compress.pipeline import CompressOptions, compress

MODELS = ("convmixer_64_4", "resnet20", "mlp_3", "__main__:user_net")
_SMALLEST = re.compile(r"smallest file this model can make, ([\d,]+) B")


def user_net() -> nn.Module:
    """A user's own model (not in the zoo): two convolutions with BatchNorm, a linear head with bias."""
    return nn.Sequential(
        nn.Conv2d(1, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(24, 48, 3, padding=1, bias=False), nn.BatchNorm2d(48), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(48, 10),
    )  # fmt: skip


@contextlib.contextmanager
def _working_directory(folder: Path) -> Iterator[None]:
    """Run the block in ``folder`` (contextlib.chdir needs Python 3.11)."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def write_subset(folder: Path, train: int, test: int) -> str:
    """A Fashion-MNIST subset as an .npz data set (small test split: each run evaluates it twice)."""
    data = get_dataset("fashion-mnist").subset(train, test, seed=0)
    path = folder / "fmnist_subset.npz"
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    return str(path)


def _smallest_for(base: dict, budget: int) -> int | None:
    """The smallest reachable size the error reports for ``budget`` (raised before training), None: reachable."""
    try:
        compress(CompressOptions(**base, target_size=budget), progress=False)
    except ConfigError as exc:
        match = _SMALLEST.search(str(exc))
        if match:
            return int(match.group(1).replace(",", ""))
        raise
    return None


def smallest_file(base: dict) -> int:
    """The smallest reachable budget. The file records its budget (more digits, a longer header), so
    the size the error reports for a 1-byte budget is probed again until that budget is accepted."""
    budget = 1
    while (smallest := _smallest_for(base, budget)) is not None:
        budget = smallest
    return budget


def run_model(model: str, base: dict, budgets: int) -> list[dict]:
    """One row per budget on a grid from the smallest reachable file to the default density's file."""
    default = compress(CompressOptions(**base), progress=False)
    assert default.file_bytes is not None
    low = smallest_file(base)
    rows = []
    for budget in np.linspace(low, default.file_bytes, budgets).round().astype(int):
        options = dict(base, output=f"{Path(base['output']).stem}_b{int(budget)}.pemn", target_size=int(budget))
        result = compress(CompressOptions(**options), progress=False)
        assert result.target is not None and result.output is not None
        size = os.path.getsize(result.output)
        written = pemn.read_pemn(result.output).header
        rows.append({"model": model, "budget": int(budget), "density": result.target["density"], "file": size,
                     "written": written["config"]["density"], "fitted": "recipe" not in written["provenance"],
                     "slack": int(budget) - size, "over": size > budget, "accuracy": result.accuracy,
                     "default_bytes": default.file_bytes, "smallest": low})
    return rows


def report(rows: list[dict], command: str, args: argparse.Namespace) -> str:
    """The markdown table and its summary: hit rate and median slack."""
    hits = sum(not row["over"] for row in rows)
    slack = [row["slack"] for row in rows]
    share = [row["slack"] / row["budget"] for row in rows]
    lines = [
        "# --target-size: budgets met and the slack left",
        "",
        f"Command: `{command}`",
        "",
        f"{h.today()}. Per model, {args.budgets} budgets evenly spaced from the smallest "
        "reachable file (one kept weight per layer) to the file at the default density 0.5 without a target; "
        f"each a real run: {args.epochs} epoch on {args.train_samples} Fashion-MNIST images (test split "
        f"{args.test_samples} images), defaults otherwise (onelayer, fp16 leftovers, BatchNorm folded), "
        f"{args.threads} thread. File = size on disk (os.path.getsize).",
        "",
        f"**Within budget: {hits}/{len(rows)} ({100 * hits / len(rows):.0f}%). Median slack "
        f"{statistics.median(slack):,.0f} B ({100 * statistics.median(share):.1f}% of the budget); "
        f"largest {max(slack):,} B. Made to fit after training: {sum(row['fitted'] for row in rows)}.**",
        "",
        "| model | budget B | density chosen | density written | file B | slack B | slack % | over | fitted | "
        "accuracy % |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['budget']:,} | {row['density']:g} | {row['written']:g} | {row['file']:,} | "
            f"{row['slack']:,} | {100 * row['slack'] / row['budget']:.1f} | {'OVER' if row['over'] else 'no'} | "
            f"{'yes' if row['fitted'] else 'no'} | {100 * row['accuracy']:.2f} |"
        )
    lines += ["", "Slack is what the choice before training leaves unused: each mask counted at its worst-case size "
              "for its kept count (from about 0.33 to 0.5 that is its raw size), the leftovers exactly, the "
              "header at the trial header's deflated size plus a margin of 32 B and 1/16 (`budget.header_margin`: "
              "an estimate, since deflate gives no useful bound on how other digits compress). *fitted*: the "
              "trained file was over the budget and was made to fit before it was written (the recipe left out "
              "of its provenance, then, if needed, a lower density: *density written*). Accuracies are those of "
              "1-epoch runs on a few hundred images (near chance): this benchmark measures sizes, not accuracy."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--budgets", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-samples", type=int, default=384)
    parser.add_argument("--test-samples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(h.RESULTS / "target_size.md"))
    parser.add_argument("--work", default=None, help="keep the files in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    command = "python benchmarks/target_size.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    logging.getLogger("pemn_compress").setLevel(logging.WARNING)
    rows: list[dict] = []
    out = Path(args.out).resolve()
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, _working_directory(Path(args.work or tmp)):
        data = write_subset(Path.cwd(), args.train_samples, args.test_samples)
        for model in args.models.split(","):
            base = dict(model=model, data=data, epochs=args.epochs, batch_size=64, threads=args.threads,
                        output=f"{model.replace(':', '_')}.pemn")
            rows += run_model(model, base, args.budgets)
            print(f"{model}: done ({sum(r['over'] for r in rows if r['model'] == model)} over)", file=sys.stderr)
    text = report(rows, command.strip(), args)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
