"""The ``compress`` and ``eval`` click commands: thin glue over ``compress.py``.

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

import click

from ._data_names import DATASET_ENV, DATASET_SPECS
from ._help import Argument, SectionedCommand
from ._terminal import json_safe, sanitize
from .cli import fail, rank_prefix
from .config import DEFAULT_DENSITY, DENSITY_SCHEDULES, DISTRIBUTIONS, RP_MODES, STRATEGIES
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
    "Input": ["model", "arch", "arch_kwargs", "allow_pickle", "data", "data_root", "max_train_samples"],
    "Method": ["strategy", "ratio", "rp_mode", "density", "density_schedule", "target_size", "target_ratio",
               "distribution", "rescale", "learn_values", "seed", "score_scale"],
    "Training": ["epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "label_smoothing", "augment",
                 "distill", "distill_alpha", "distill_temperature"],
    "Output": ["output", "dense_dtype", "fold_batchnorm", "format_version", "checkpoint_every", "resume", "as_json",
               "quiet"],
    "Runtime": ["device", "amp", "threads"],
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
                   + (", density annealed" if opts.get("density_schedule") == "anneal" else "")
                   + (", distilled" if result.distill else "")),
        ("data", f"{result.dataset}: {result.train_samples:,} train / {result.test_samples:,} test images"),
    ]
    delta = ""
    if result.dense_accuracy is not None:
        rows.append(("dense accuracy", f"{result.dense_accuracy:.4f}"))
        delta = f"  ({100 * (result.accuracy - result.dense_accuracy):+.2f} points)"
    rows += [
        ("accuracy", f"{result.accuracy:.4f}{delta}"),
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


@click.command("compress", cls=SectionedCommand, sections=COMPRESS_SECTIONS, context_settings=_CONTEXT)
@click.argument("model", metavar="MODEL", cls=Argument,
                help="What to compress: a zoo name, a state-dict file (with --arch), a module:function factory, "
                     "or a pickled module (with --allow-pickle).")
@click.option("--arch", default=None, metavar="NAME",
              help="Architecture of a state-dict MODEL: a zoo name (e.g. convmixer_64_4), or module:function / "
                   "module:Class from your own code (the current folder is importable). With --allow-pickle: "
                   "module:Class where the class of a pickled MODEL saved from a script's __main__ lives now.")
@click.option("--arch-kwarg", "arch_kwargs", multiple=True, metavar="KEY=VALUE", callback=_parse_kwargs,
              help="Architecture argument (repeatable; VALUE is JSON, else a string), e.g. --arch-kwarg in_chans=3.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="onelayer", show_default=True,
              help="Where the fixed values come from: own values per layer (dense), one prototype per weight shape "
                   "(onelayer), one max-layer vector (mp), a small random vector (rp, needs --ratio).")
@click.option("--ratio", type=float, default=None,
              help="rp only: the vector has int(N_max * ratio) + 1 values, e.g. 1e-3.")
@click.option("--rp-mode", type=click.Choice(RP_MODES), default="rand", show_default=True,
              help="rp only: tile the vector then permute it (rand), or tile it in order (copy; when the vector "
                   "length divides a kernel's size every kernel repeats one pattern: 8 points worse on "
                   "convmixer_64_4, see benchmarks/results/size_accuracy_*).")
@click.option("--density", type=float, default=DEFAULT_DENSITY, show_default=True,
              help="Fraction of each layer's weights the mask keeps, in (0, 1]. The default is the density whose "
                   "files met both goals of the full-data report (benchmarks/results/frontier_*): within 1.0 point "
                   "of dense training, >= 25x smaller (masks are entropy-coded: 0.5 costs a full bit per weight).")
@click.option("--density-schedule", type=click.Choice(DENSITY_SCHEDULES), default="constant", show_default=True,
              help="constant: train at the density from the first step (edge-popup). anneal: start with every "
                   "weight kept and remove the lowest-score ones gradually (cubic) until the density is reached "
                   "at 75% of the steps; the file is the same size. In the full-data report it beat constant on "
                   "every seed at --target-ratio 40 (density 0.09) and lost at the default density "
                   "(benchmarks/results/frontier_*): for small budgets.")
@click.option("--target-size", default=None, metavar="SIZE",
              help="Choose the density so that the file is at most SIZE bytes whatever training learns: 40000, "
                   "40KB (40,000), 40KiB (40,960), 1.5MB, 2MiB. The largest density up to the default "
                   f"({DEFAULT_DENSITY:g}) whose size bound fits; an error before training when even one kept "
                   "weight per layer does not. Not with --density.")
@click.option("--target-ratio", type=float, default=None, metavar="X",
              help="Like --target-size, with the budget the dense fp32 safetensors file's size / X (file at least "
                   "X times smaller). Not with --density or --target-size.")
@click.option("--distribution", type=click.Choice(DISTRIBUTIONS), default="signed_constant", show_default=True,
              help="Distribution of the fixed values before the per-layer scale: signed_constant (+1/-1), normal "
                   "(sum of four uniforms), uniform (on -sqrt 3..sqrt 3); all have unit variance. signed_constant "
                   "beat normal on every seed of the recipe benchmark (benchmarks/results/recipe_*).")
@click.option("--rescale/--no-rescale", default=True, show_default=True,
              help="Scale every layer to its own fan-in (--no-rescale reproduces the paper's mp/rp).")
@click.option("--learn-values", is_flag=True, help="mp/rp: train the few unique values too (stored in the file).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="One seed for the fixed values, the initial scores, the training subset, data order and "
                   "augmentation.")
@click.option("--score-scale", type=float, default=1.0, show_default=True,
              help="Size of the initial mask scores: uniform in +-SCALE/sqrt(fan_in) (edge-popup's Kaiming "
                   "bound at 1). With AdamW each step moves a score by about --lr whatever its size, so a larger "
                   "scale makes the masks change more slowly. Scores are not stored: the file does not change.")
@click.option("--data", default="fashion-mnist", show_default=True, help=_DATA_HELP)
@click.option("--data-root", default=None, metavar="DIR",
              help="Folder of a named data set (default: its environment variable, see --data).")
@click.option("--epochs", type=int, default=10, show_default=True,
              help="Passes over the training set (or the --max-train-samples subset); the learning-rate schedule "
                   "spans them all. Time grows linearly with it.")
@click.option("--batch-size", type=int, default=128, show_default=True,
              help="Training images per optimizer step, global (split across torchrun processes).")
@click.option("--lr", type=float, default=0.01, show_default=True,
              help="Peak learning rate of the mask scores and the other trained parameters (norms, biases, "
                   "learned values). Scores only need to change order, so a large rate suits them.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True,
              help="adamw: AdamW (torch defaults, decoupled weight decay); sgd: SGD with Nesterov momentum 0.9.")
@click.option("--schedule", type=click.Choice(["cosine", "onecycle", "constant"]), default="cosine", show_default=True,
              help="Learning rate over the run: cosine (linear warm-up over the first half epoch, then cosine decay "
                   "to 0), onecycle (torch's OneCycleLR: up from --lr/25 to --lr over the first 30% of steps, then "
                   "down to near 0), constant (--lr throughout).")
@click.option("--weight-decay", type=float, default=5e-4, show_default=True,
              help="Weight decay on the mask scores (and on any other trained parameter with 2+ dimensions); never "
                   "on norms, biases or learned values. 0 turns it off.")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True,
              help="Cross-entropy label smoothing, in [0, 1): 0.1 moves 10% of each target onto a uniform "
                   "distribution over the classes. 0: hard labels.")
@click.option("--augment/--no-augment", default=False, show_default=True,
              help="Random crop + horizontal flip of training images. Off by default: on the full Fashion-MNIST "
                   "training set it cost accuracy on every seed, at 3 epochs (benchmarks/results/recipe_*) and "
                   "at 10 (benchmarks/results/frontier_*); it may help long runs on small training sets. Never "
                   "for digits or text.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to train: auto (CUDA when available, else the CPU), cpu, or cuda.")
@click.option("--amp/--no-amp", default=True, show_default=True,
              help="bfloat16 autocast on CUDA, faster (no effect on CPU); the accuracy recorded in the file is "
                   "measured without it.")
@click.option("--distill/--no-distill", default=None,
              help="Distil from the dense MODEL while training the masks. Default: on when MODEL carries trained "
                   "weights (a state dict or pickled module), off for a zoo name or factory.")
@click.option("--distill-alpha", type=float, default=0.5, show_default=True,
              help="Weight of the distillation term, in (0, 1]: loss = (1 - alpha) x cross-entropy + alpha x T^2 x "
                   "KL(teacher || student). Only with --distill.")
@click.option("--distill-temperature", type=float, default=4.0, show_default=True,
              help="Temperature T (> 0) dividing teacher and student logits in the distillation term: higher T gives "
                   "softer targets that carry more of the teacher's ranking of the wrong classes. Only with --distill.")
@click.option("--dense-dtype", type=click.Choice(["float32", "float16"]), default="float16", show_default=True,
              help="Storage of the parameters that stay dense (BatchNorm, biases); float16 halves their bytes.")
@click.option("--fold-batchnorm/--no-fold-batchnorm", default=True, show_default=True,
              help="Store each BatchNorm folded into one scale and shift per channel: a smaller file for deployment "
                   "(the accuracy reported is that of this file). Such a file cannot be loaded for further training "
                   "(pemn.load(masked=True)); --no-fold-batchnorm keeps the running statistics. Checkpoints stay "
                   "unfolded either way.")
@click.option("--format-version", type=click.IntRange(1, 2), default=2, show_default=True,
              help="File format: 2 stores a compact, deflated header (smaller files); 1 is for readers that only "
                   "know format version 1 (formats/pemn-v1.md). pemn-compress reads both.")
@click.option("-o", "--output", default=None, metavar="PATH", help="Output file (default: <MODEL stem>.pemn here).")
@click.option("--checkpoint-every", type=int, default=None, metavar="STEPS",
              help="Write <output>.ckpt every STEPS optimizer steps (default: after every epoch; 0: only on Ctrl-C "
                   "or a crash).")
@click.option("--resume", is_flag=True, help="Continue from <output>.ckpt (same options required).")
@click.option("--max-train-samples", type=int, default=None, metavar="N",
              help="Train on a class-stratified subset of N images, for quick runs (default: the whole training "
                   "split; the test split is always evaluated in full).")
@click.option("--threads", type=int, default=None, metavar="N",
              help="CPU threads torch uses during the run (default: torch's choice, usually one per core); lower it "
                   "on a shared machine or with several torchrun processes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout (no progress bars).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no summary.")
@click.option("--allow-pickle", is_flag=True,
              help="Read a MODEL file that holds a whole pickled module (torch.save(model)). This runs code from the "
                   "file; only for files you trust. Its class must be importable (a module in the current folder "
                   "counts); one defined in the saving script's __main__ needs --arch module:Class.")
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
        from .compress import CompressOptions
        from .compress import compress as run_compress

        _check_explicit_density(kwargs)
        options = CompressOptions(**kwargs)
        result = run_compress(options, progress=not (as_json or quiet))
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
