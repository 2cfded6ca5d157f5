"""The ``compress`` and ``eval`` click commands: thin doors over the library (``pemn.compress``, ``pipeline.py``).

They are standalone ``click.Command`` objects (named ``compress`` and ``eval``); the ``pemn`` group
attaches them, lazily through ``cli.LAZY_COMMANDS``::

    "compress": "pemn_compress.commands:compress",
    "eval": "pemn_compress.commands:eval_command",

or eagerly with ``cli.add_command(compress)`` / ``cli.add_command(eval_command)``. Both honour the
group's ``--traceback`` flag (``ctx.meta["pemn.traceback"]``).

Importing this module does not import torch (``pemn --help`` stays instant); the commands import
it when they run.

Errors go through the CLI's one error path, ``cli.fail``: one line ``error: ...`` on stderr (and
the JSON error document with ``--json``), exit status from ``errors.EXIT_CODES``: 0 success; 2 bad
input (click's own usage errors also exit 2); 130 interrupted (Ctrl-C), after saving a checkpoint.

``pemn compress --json`` prints exactly one JSON document on stdout: on success the keys of
``CompressResult`` — output, input, input_kind, architecture, dataset, train_samples, test_samples,
dense_accuracy, accuracy, file_bytes, dense_fp32_bytes, ratio, steps, epochs, train_seconds,
seconds, images_per_sec, resumed, distill, device, world_size, rank, options, history, warnings,
target (None, or with --target-size / --target-ratio: budget_bytes, target_size, target_ratio, density,
file_bytes_bound, masks_bytes_bound, leftover_bytes, header_bytes_bound);
on failure ``{"error": {"type", "message", "checkpoint"}}``. ``pemn eval --json`` prints
file, dataset, samples, accuracy, loss, recorded_accuracy, dense_accuracy, device, batch_size,
seconds (or the same error document).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from ._data_names import DATASET_ENV, DATASET_SPECS
from ._help import Argument, SectionedCommand
from ._terminal import json_safe, sanitize
from .cli import fail, rank_prefix
from .defaults import OPTIONS, SECTIONS, Option
from .errors import ConfigError, PemnError, option_error
from .interrupt import TrainingFailed

__all__ = ["compress", "eval", "eval_command"]

_DATA_HELP = (
    "Data set: " + ", ".join(DATASET_SPECS) + ". Named sets are found in --data-root, else their environment "
    f"variable ({', '.join(DATASET_ENV.values())}), else (Fashion-MNIST) the Debian package dataset-fashion-mnist."
)
# `--help` headings (pemn_compress._help): parameter names in display order. An option missing here
# is still listed, under "Other options"; a name here that matches no option is ignored.
COMPRESS_SECTIONS = {
    section: (["model"] if section == "Input" else [])
    + [name for name, option in OPTIONS.items() if option.section == section]
    + (["as_json", "quiet"] if section == "Output" else [])
    for section in SECTIONS
}
EVAL_SECTIONS = {
    "Input": ["file", "arch", "arch_kwargs", "trust_code", "data", "data_root"],
    "Runtime": ["device", "batch_size", "threads"],
    "Output": ["as_json"],
}
_DEVICE_HELP = "Where to run: auto (CUDA when available, else the CPU), cpu, or cuda."
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _training_failed(failed: TrainingFailed, as_json: bool) -> None:
    """An error once training had started: bad input and I/O errors as one line (exit 2), anything
    else (a bug, a crash in user code) with its traceback; both say how to resume."""
    if isinstance(failed.error, (PemnError, OSError)):
        fail(failed.error, as_json=as_json, checkpoint=failed.checkpoint)
    if failed.checkpoint:
        click.echo(f"{rank_prefix()}checkpoint saved to {failed.checkpoint}; rerun with --resume", err=True)
    raise failed.error from None


def _check_explicit_density(kwargs: dict) -> None:
    """--density typed with --target-size / --target-ratio (even its default value) is a one-line error."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source("density")
    given = [name for name in ("target_size", "target_ratio") if kwargs.get(name) is not None]
    targets = [f"--{name.replace('_', '-')}" for name in given]
    if targets and source not in (None, ParameterSource.DEFAULT):
        raise option_error("density", f"and {targets[0]} are mutually exclusive: {targets[0]} chooses the density")


def _parse_kwargs(ctx, param, values) -> dict:
    kwargs = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"expected KEY=VALUE, found {item!r}", ctx=ctx, param=param)
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw
    return kwargs


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,} bytes"


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    opts = result.options
    strategy = opts["strategy"] + (f" (ratio {opts['ratio']:g}, {opts['rp_mode']})" if opts["strategy"] == "rp" else "")
    arch = result.architecture.get("name") or result.architecture.get("target") or "-"
    density = result.target["density"] if result.target else opts["density"]
    target = f" (target {result.target['budget_bytes']:,} B)" if result.target else ""
    rows = [
        ("input", f"{result.input} ({result.input_kind}, {arch})"),
        ("method", f"{strategy}, density {density:g}{target}, {opts['distribution']} values"
                   + (", density annealed" if result.density_schedule == "anneal" else "")
                   + (", distilled" if result.distill else "")),
        ("data", f"{result.dataset}: {_count(result.train_samples)} train / {_count(result.test_samples)} test "
                 "samples"),
    ]
    name, measured, dense = result.metric_name, result.metric, result.dense_metric
    delta = ""
    if dense is not None:
        rows.append((f"dense {name}", f"{dense:.4f}"))
        if measured is not None:
            points = name == "accuracy"
            delta = f"  ({100 * (measured - dense):+.2f} points)" if points else f"  ({measured - dense:+.4f})"
    rows += [
        (name, f"{measured:.4f}{delta}" if measured is not None else "not measured (no test data)"),
        ("file size", _bytes(result.file_bytes)),
        ("dense fp32 size", _bytes(result.dense_fp32_bytes)),
        ("ratio", f"{result.ratio:.1f}x smaller" if result.ratio else "-"),
        ("time", f"{result.seconds:.1f} s ({result.steps:,} steps, {result.images_per_sec:,.0f} img/s "
                 f"on {result.device}{f' x {result.world_size}' if result.world_size > 1 else ''})"),
    ]
    table = Table(show_header=False, box=None, pad_edge=False, title=Text(f"pemn compress -> {result.output}"),
                  title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:  # Text: paths and names are never read as rich markup
        table.add_row(label, Text(sanitize(value)), style="yellow" if label == "warning" else None)
    Console(soft_wrap=False).print(table)


def _click_option(option: Option) -> Callable[[Callable], Callable]:
    """The click option of one declared option (``defaults.OPTIONS``): flags, type, default and help."""
    evidence = f" Measured: {option.evidence}." if option.evidence else ""
    attrs: dict[str, Any] = {"help": option.help + evidence, "metavar": option.metavar}
    if option.kind == "flag":
        attrs.update(is_flag=True, default=option.default)
    elif option.kind == "switch":
        attrs.update(default=option.default, show_default=option.default is not None)
    elif option.kind == "kwargs":
        attrs.update(multiple=True, callback=_parse_kwargs, default=())
    else:
        types = {"int": int, "float": float, "choice": click.Choice(option.choices)}
        attrs.update(type=types.get(option.kind, str), default=option.default,
                     show_default=option.default is not None)
    kept = {k: v for k, v in attrs.items() if v is not None or k == "default"}  # default None: not given
    return click.option(*option.flags, option.name, **kept)


def _declared_options(command: Callable) -> Callable:
    """Every declared option that has command-line flags, in the order of ``defaults.OPTIONS``."""
    for option in reversed(list(OPTIONS.values())):
        if option.flags:
            command = _click_option(option)(command)
    return command


@click.command("compress", cls=SectionedCommand, sections=COMPRESS_SECTIONS, context_settings=_CONTEXT)
@click.argument("model", metavar="MODEL", cls=Argument,
                help="What to compress: a zoo name, a state-dict file (with --arch), a module:function factory, "
                     "or a pickled module (with --allow-pickle).")
@_declared_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout (no progress bars).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no summary.")
def compress(as_json: bool, quiet: bool, **kwargs) -> None:
    """Compress MODEL into a tiny .pemn file: learn binary masks over fixed pseudo-random weights.

    MODEL is a zoo name (convmixer_64_4; its input channels and classes follow --data), a state dict
    (.pt/.pth read with torch.load(weights_only=True), or .safetensors) with --arch, a module:function
    factory (imports your code), or a pickled module (only with --allow-pickle).

    \b
    Examples:
      pemn compress convmixer_64_4 --epochs 3
      pemn compress model.pt --arch convmixer_64_4 --strategy onelayer --data fashion-mnist
      pemn compress model.pt --arch convmixer_64_4 --strategy rp --ratio 1e-3 -o rp.pemn
      torchrun --nproc_per_node 2 $(which pemn) compress convmixer_64_4 --device cpu
    """
    try:
        from .pipeline import CompressOptions
        from .pipeline import compress as run_compress

        _check_explicit_density(kwargs)
        options = CompressOptions(**kwargs)
        result = run_compress(options, progress=not (as_json or quiet))  # pemn.compress, the library's door
    except TrainingFailed as failed:
        _training_failed(failed, as_json)
    except (KeyboardInterrupt, PemnError, OSError) as exc:
        fail(exc, as_json=as_json)
    if result.rank != 0:
        return
    for warning in result.warnings:  # on stderr whatever the output mode (and in --json's "warnings")
        click.echo(f"warning: {sanitize(warning)}", err=True)
    if as_json:
        click.echo(json.dumps(json_safe(result.to_dict()), indent=2, sort_keys=True, allow_nan=False))
    elif not quiet:
        _print_summary(result)


@click.command("eval", cls=SectionedCommand, sections=EVAL_SECTIONS, context_settings=_CONTEXT)
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False), cls=Argument,
                help="The .pemn file to evaluate.")
@click.option("--data", default=None, help=_DATA_HELP + " Default: the data set recorded in FILE.")
@click.option("--data-root", default=None, metavar="DIR",
              help="Folder of a named data set (default: the folder recorded in FILE when --data is not given).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help=_DEVICE_HELP)
@click.option("--batch-size", type=int, default=None,
              help="Test images per batch. Default: the batch size recorded in FILE (else 500), which reproduces "
                   "the recorded accuracy.")
@click.option("--arch", default=None, metavar="NAME",
              help="Load FILE into this architecture instead of the one it records: a zoo name or module:function / "
                   "module:Class from your own code (the current folder is importable; your code runs without "
                   "--trust-code). Needed for files that record no architecture, e.g. made from a pickled module.")
@click.option("--arch-kwarg", "arch_kwargs", multiple=True, metavar="KEY=VALUE", callback=_parse_kwargs,
              help="Argument of --arch (repeatable; VALUE is JSON, else a string), e.g. --arch-kwarg hidden=64.")
@click.option("--trust-code", is_flag=True,
              help="Allow a module:function architecture or data set recorded in FILE; imports and runs that code.")
@click.option("--threads", type=int, default=None, metavar="N",
              help="CPU threads torch uses (default: torch's choice, usually one per core).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def eval_command(file: str, data, data_root, device, batch_size, arch, arch_kwargs, trust_code, threads,
                 as_json) -> None:
    """Accuracy of a .pemn FILE over a data set's test split, next to the accuracy recorded in it."""
    try:
        import torch

        from .evaluation import evaluate_file

        if batch_size is not None and batch_size < 1:
            raise option_error("batch_size", f"must be >= 1, found {batch_size}")
        if threads is not None:
            if threads < 1:
                raise option_error("threads", f"must be >= 1, found {threads}")
            torch.set_num_threads(threads)
        if arch_kwargs and not arch:
            raise ConfigError("--arch-kwarg needs --arch (the architecture it is an argument of)")
        report = evaluate_file(file, data, device, batch_size, data_root=data_root, trust_code=trust_code,
                               arch=arch, arch_kwargs=arch_kwargs)
    except (KeyboardInterrupt, PemnError, OSError) as exc:
        fail(exc, as_json=as_json)
    if as_json:
        click.echo(json.dumps(json_safe(report), indent=2, sort_keys=True, allow_nan=False))
        return
    recorded = report["recorded_accuracy"]
    line = (f"{sanitize(report['file'])}: accuracy {report['accuracy']:.4f} on {sanitize(report['dataset'])} test "
            f"({report['samples']:,} images, {report['device']})")
    if isinstance(recorded, (int, float)):
        same = "same" if recorded == report["accuracy"] else f"{100 * (report['accuracy'] - recorded):+.2f} points"
        line += f"; recorded at compress time {recorded:.4f} ({same})"
    click.echo(line)


eval = eval_command  # noqa: A001 - the command's name; `from pemn_compress.commands import eval`
