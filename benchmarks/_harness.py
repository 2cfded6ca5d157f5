"""The one harness of the benchmark scripts: plans, CSV rows, paired statistics, rendering, plots.

Every report script in ``benchmarks/`` is a declaration of its jobs and its rows over this module (and
the library, ``pemn_compress``); scripts import nothing from each other. They run as
``python benchmarks/<name>.py``, so this folder is on ``sys.path`` and they ``import _harness``.

- Plans: a job is a dict with a unique ``"job"`` id; ``add_plan_options`` declares ``--resume`` (skip the
  jobs already in the CSV), ``--only REGEX`` (the jobs whose id matches) and, where a script splits its
  plan over processes, ``--worker I/N`` (jobs I, I+N, ... of the plan); ``select`` applies them.
- Rows: ``start_csv`` / ``append_rows`` (one line per finished row, floats to 6 significant digits, so an
  interrupted run keeps what finished), ``read_rows`` (typed back).
- Statistics: ``paired`` is the seed-by-seed difference of two rows (same seed: same initial values,
  scores and data order), ``mean_sd``, ``per_seed``, ``verdict``.
- Rendering: ``environment`` (the "torch version, machine, threads" line of every setup), ``today``,
  ``started_date``, ``recorded_command``, ``write_meta`` / ``read_meta`` (the run's ``.json``: command,
  setup, title), ``replace_block`` (a README's generated ``<!-- name:begin -->`` block).
- Plots: ``pyplot`` (matplotlib is optional: no plot, and a note, without it).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib
import json
import os
import platform
import re
import shlex
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
RUN_SPLITTING = ("--resume", "--only", "--worker")  # how a run was split is not part of what it measures


# ---------------------------------------------------------------------------------------------- plans
def worker_spec(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N (an argparse type)."""
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, found {text!r}")
    return int(match.group(1)), int(match.group(2))


def add_plan_options(parser: argparse.ArgumentParser, job_id: str, workers: bool = False) -> None:
    """``--resume``, ``--only REGEX`` (``job_id``: what a job's id is made of) and, with ``workers``, ``--worker``."""
    parser.add_argument("--resume", action="store_true", help="skip the jobs already in the CSV")
    parser.add_argument("--only", metavar="REGEX", help=f"run only the jobs whose id ({job_id}) matches")
    if workers:
        parser.add_argument("--worker", type=worker_spec, default=(0, 1), metavar="I/N",
                            help="run only jobs I, I+N, I+2N, ... of the plan (0 <= I < N)")  # fmt: skip


def select(jobs: list[dict], done: set[str], only: str | None = None, worker: tuple[int, int] = (0, 1)) -> list[dict]:
    """The jobs to run: this worker's share of the plan (taken before ``done``, so shares stay stable as
    jobs finish), without the finished ones, those whose id matches ``only``."""
    index, count = worker
    share = [j for i, j in enumerate(jobs) if i % count == index]
    return [j for j in share if j["job"] not in done and (not only or re.search(only, j["job"]))]


def recorded_command(script: str, argv: list[str], skip: Iterable[str] = RUN_SPLITTING) -> str:
    """The command a report records: ``python benchmarks/<script> ARGS`` without the options in ``skip``
    (and their values)."""
    skip = set(skip)
    takes_value = skip - {"--resume"}
    kept = [a for i, a in enumerate(argv) if a not in skip and (i == 0 or argv[i - 1] not in takes_value)]
    return (f"python benchmarks/{script} " + " ".join(shlex.quote(a) for a in kept)).strip()


def run_name(script: str, data: str, model: str, quick: bool) -> str:
    """A report's file stem: ``<script>[_quick]_<task>_<model>_cpu`` (the task: the data spec, path-safe)."""
    task = data.replace(":", "_").replace("/", "_")
    return f"{script}{'_quick' if quick else ''}_{task}_{model}_cpu"


# ----------------------------------------------------------------------------------------------- rows
def cell(value) -> object:
    """A CSV cell: floats to 6 significant digits, lists of floats space-separated (4 decimals), None empty."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return " ".join(f"{v:.4f}" for v in value)
    return "" if value is None else value


def start_csv(path: Path, fields: list[str], resume: bool, job_id: Callable[[dict], str] = lambda r: r["job"]
              ) -> set[str]:  # fmt: skip
    """The ids (``job_id(row)``) of the jobs already in ``path`` with ``resume``; otherwise a new CSV (header
    only) and none."""
    if resume and path.exists():
        return {job_id(r) for r in read_rows(path)}
    with open(path, "w", newline="") as fh:
        csv.DictWriter(fh, fieldnames=fields).writeheader()
    return set()


def append_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        for row in rows:
            writer.writerow({k: cell(v) for k, v in row.items()})


def read_rows(path: Path, ints: Iterable[str] = (), floats: Iterable[str] = (),
              optional: Iterable[str] = ()) -> list[dict]:  # fmt: skip
    """A results CSV, its ``ints`` and ``floats`` columns typed (``optional`` ones: None when empty); [] for
    no file."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    optional = set(optional)
    for row in rows:
        for key in ints:
            row[key] = int(row[key])
        for key in floats:
            row[key] = None if key in optional and row[key] == "" else float(row[key])
    return rows


def group(rows: Iterable[dict], key: str, seed: str = "seed") -> dict[str, dict[int, dict]]:
    """``row[key]`` -> seed -> row, in first-seen order."""
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r[key], {})[r[seed]] = r
    return out


# ----------------------------------------------------------------------------------------- statistics
def paired(values: dict[int, float], base: dict[int, float], scale: float = 100.0) -> dict[int, float]:
    """Seed -> ``scale * (values - base)`` (points, for accuracies as fractions) on the seeds both have, in
    seed order: a method measured against the row it changes, seed by seed."""
    return {s: scale * (values[s] - base[s]) for s in sorted(set(values) & set(base))}


def mean_sd(values: Iterable[float], signed: bool = False) -> str:
    """``"87.12 ± 0.34"`` (``"+0.12 ± 0.34"`` with ``signed``); the mean alone for one value."""
    values = list(values)
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):{'+' if signed else ''}.2f}{spread}"


def per_seed(values: dict[int, float], signed: bool = True) -> str:
    """``"s0 +0.12, s1 -0.40"``."""
    return ", ".join(f"s{s} {v:{'+' if signed else ''}.2f}" for s, v in values.items())


def verdict(deltas: list[float], otherwise: str = "mixed") -> str:
    """What paired differences say: better or worse on every seed, or ``otherwise``; no verdict on one seed."""
    if len(deltas) < 2:
        return "one seed: no verdict yet"
    return "better on every seed" if min(deltas) > 0 else "worse on every seed" if max(deltas) < 0 else otherwise


# ------------------------------------------------------------------------------------------ rendering
def environment(threads: int | None = None, device: str | None = None) -> str:
    """``"cpu, torch 2.5.1, x86_64, 1 thread(s)"``: the software and machine a setup line states."""
    import torch

    parts = ([device] if device else []) + [f"torch {torch.__version__}", platform.machine()]
    return ", ".join(parts + ([f"{threads} thread(s)"] if threads is not None else []))


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.2f} at the end (2 cores shared with other jobs)"


def today() -> str:
    return datetime.date.today().isoformat()


def started_date(meta_path: Path, resume: bool) -> str:
    """The start date a report's JSON records: a resumed report keeps the one it has, a new one gets today's."""
    earlier = re.search(r"started (\S+)\.$", read_meta(meta_path).get("setup", "")) if resume else None
    return earlier.group(1) if earlier else today()


def read_meta(path: Path) -> dict:
    """A run's ``.json`` (command, setup, title); {} when there is none."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_meta(path: Path, command: str, setup: str, title: str) -> None:
    path.write_text(json.dumps({"command": command, "setup": setup, "title": title}, indent=1))


def report_head(meta: dict, default_title: str, default_command: str) -> list[str]:
    """A report's first lines: its title, the command that made it, its setup."""
    return [f"# {meta.get('title', default_title)}", "", f"Command: `{meta.get('command', default_command)}`", "",
            f"Setup: {meta.get('setup', '')}", ""]  # fmt: skip


def write_text(path: Path, lines: list[str]) -> Path:
    """``lines`` as a text file (its folder made if missing); says so on standard output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")
    return path


def replace_block(readme: Path, begin: str, end: str, block: list[str]) -> None:
    """Replace the README's lines from the ``begin`` marker to the ``end`` marker (both included) by
    ``block`` (which starts and ends with them); refuse a README without both markers."""
    text = readme.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{readme} has no {begin} ... {end} block to fill")
    head, rest = text.split(begin, 1)
    readme.write_text(head + "\n".join(block) + rest.split(end, 1)[1])


def cli_flags(changes: dict) -> str:
    """The `pemn compress` flags that set ``changes`` (CompressOptions field -> value); "(none)" for none."""
    parts = []
    for key, value in changes.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(f"--{name}" if value else f"--no-{name}")
        else:
            parts.append(f"--{name} {value:g}" if isinstance(value, float) else f"--{name} {value}")
    return " ".join(parts) or "(none)"


def print_progress(i: int, total: int, job: str, text: str) -> None:
    print(f"[{i}/{total}] {job:<50} {text}", flush=True)


# ------------------------------------------------------------------------------------------------ data
def quick_data(work: Path, n_train: int, n_test: int) -> str:
    """A class-stratified subset of the real Fashion-MNIST written once as .npz (the --quick data set)."""
    import numpy as np

    from pemn_compress.data import get_dataset

    path = work / f"fashion-mnist_{n_train}_{n_test}.npz"
    if not path.exists():
        d = get_dataset("fashion-mnist").subset(n_train, n_test, seed=0)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
        os.replace(tmp, path)
    return str(path)


def train_weights(options, model_name: str, data, callbacks: Sequence = ()):
    """A zoo model's own weights trained as ``pemn compress`` trains masks: the pipeline's own data source
    (``pemn_compress.sources.ArraySource``: its training loader with the batch, shuffle, augmentation and
    seed of ``options``, its test loader, the zoo shape it gives), the options' optimizer, schedule and
    threads, on ``data`` (an ``ArrayDataset`` loaded once by the caller); ``callbacks``: factories
    ``f(model) -> Callback`` (a pruning schedule, say). Returns (model, the fit result, the test accuracy
    after each epoch but the last)."""
    import torch

    import pemn_compress as pemn
    from pemn_compress.sources import ArraySource
    from pemn_compress.train import evaluate

    source, cpu = ArraySource(data), torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads or threads)
    try:
        torch.manual_seed(options.seed)
        model = pemn.create_model(model_name, **source.zoo_kwargs())
        loader = source.train_loader(batch_size=options.batch_size, seed=options.seed, augment=options.augment,
                                     rank=0, world_size=1, device=cpu)  # fmt: skip
        test = source.test_loader(batch_size=options.eval_batch_size, device=cpu)
        history: list[float] = []

        class EpochEval(pemn.Callback):
            def on_epoch_end(self, trainer, metrics) -> None:
                if trainer.epoch < trainer.config.epochs:
                    history.append(evaluate(model, test, "cpu")[1])

        hooks = [*(make(model) for make in callbacks), EpochEval()]
        fit = pemn.Trainer(model, loader, None, options.train_config(), callbacks=hooks,
                           device="cpu").fit()  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return model, fit, history


def model_kwargs(data) -> dict:
    """The zoo keyword arguments that fit a data set (channels, classes, image size)."""
    return {"in_chans": data.in_chans, "num_classes": data.num_classes, "img_size": data.img_size[0]}


# ----------------------------------------------------------------------------------------------- plots
def pyplot():
    """matplotlib's pyplot (Agg backend), or None with a note when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plots]'): no PNG written", file=sys.stderr)
        return None
    return plt


def error_series(ax, points: list[tuple[float, float, float]], style: str, label: str, connect: bool = False,
                 **kw) -> None:  # fmt: skip
    """(x, y, spread) points, sorted by x, as markers with error bars (none when every spread is 0)."""
    if not points:
        return
    xs, ys, errs = zip(*sorted(points, key=lambda p: p[0]), strict=True)  # stable: ties keep their order
    ax.errorbar(xs, ys, yerr=errs if any(errs) else None, fmt=style, ls="-" if connect else "none", label=label,
                capsize=2, ms=6, **kw)  # fmt: skip


def save_figure(fig, plt, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@contextlib.contextmanager
def pinned(constants: tuple):
    """Set each ``("module.NAME", value)`` while the block runs, then put the old values back."""
    saved = []
    try:
        for target, value in constants:
            module_name, name = target.rsplit(".", 1)
            module = importlib.import_module(module_name)
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)
