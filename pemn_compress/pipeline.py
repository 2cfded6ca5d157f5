"""The compress pipeline behind ``pemn.compress`` and ``pemn compress``: a user's model in, a trained `.pemn` out.

    import pemn_compress as pemn
    result = pemn.compress(model, train_loader, test=test_loader, output="model.pemn")
    result.accuracy, result.file_bytes, result.ratio

``compress(model, train, test=..., **options)`` takes the model (an ``nn.Module``, a zoo name, a file or
``module:function``), the data (torch ``DataLoader``/``Dataset``, arrays, or a data set name; see
``sources.py``) and any ``CompressOptions`` field, whose defaults are declared once in ``defaults.py`` and
shared with the CLI (``pemn compress`` builds a ``CompressOptions`` and calls ``compress`` with it).

It runs four stages, each a function of the previous ones' typed results:

1. ``validate`` -> ``Checked``, before any data is read: the output folder (exists, writable), the
   checkpoint (``--resume`` needs one with the same settings; a stray one is never overwritten
   silently), the input model, and the recipe (``options.py``). Bad options fail earlier still,
   when ``CompressOptions`` is constructed (``ConfigError``).
2. ``prepare`` -> ``Prepared``: the data set (``DataNotFoundError`` says how to get it), the
   architecture and one dummy forward with a batch of the data's shape (``DataError`` naming both
   shapes), the loaders; when the input carries trained weights, its test accuracy
   (``dense_accuracy``) and optionally that model as the distillation teacher; with
   ``target_size`` / ``target_ratio``, the density whose file is guaranteed within the budget
   (``budget.py``; ConfigError before training when none is); then ``mask_`` on a fresh copy of the
   architecture: the student.
3. ``train_masks`` -> ``Trained``: ``Trainer.fit`` with checkpoints and graceful Ctrl-C; the batches of the
   user's torch data are checked as they come (``sources.CheckedLoader``: one ``DataError`` naming the batch,
   a checkpoint kept).
4. ``finish`` -> ``CompressResult``: the file is encoded (BatchNorm folded unless ``fold_batchnorm=False``;
   the checkpoint always holds the unfolded trainable state), loaded back exactly as ``pemn.load`` will
   load it, its test accuracy is measured, and it is written atomically with ``provenance =
   {dataset, accuracy, dense_accuracy, normalization, evaluation, recipe, ...}``; the checkpoint is
   then removed.

Inputs (``options.model``; see ``inputs.py``): a zoo name (its ``in_chans``/``num_classes``/
``img_size`` follow the data set), a state dict (``.pt``/``.pth`` read with ``torch.load(weights_only=
True)``, or ``.safetensors``) with ``arch``, a ``module:function`` factory (imports user code), or a
whole pickled module (only with ``allow_pickle=True``: it runs code from the file), or in Python an
``nn.Module``. State dicts, pickled and given modules carry trained weights; zoo names and factories do not.

Distillation (``distill``): None (the default) turns it on exactly when the input carries trained
weights whose test accuracy is above chance (a teacher at chance teaches nothing: it is turned off with a
warning): the student learns from ``(1 - alpha) * CE + alpha * T^2 * KL(teacher || student)``. Never with
a custom ``loss=`` (``tasks.py``).

Threads (``threads``): None takes torch's default lowered to the cores other programs leave free, said in a
status line (``choose_threads``); a resumed run keeps the interrupted run's count.

Checkpoints (``checkpoints.py``): ``<output>.ckpt``, written atomically by the main rank every
``checkpoint_every`` steps (None: after every epoch; 0: only on interruption), on Ctrl-C and on any
exception raised while the trainer's state is consistent (between two optimizer steps; a crash
inside a step keeps the previous checkpoint). ``resume=True`` continues it; a resumed run writes a
file byte-identical to an uninterrupted one. The first Ctrl-C lets the current batch finish (so the
checkpoint is exact); a second one stops at once (``interrupt.py``). Interruption raises
``TrainingInterrupted`` (a ``KeyboardInterrupt``); an error once training has started raises
``TrainingFailed`` wrapping it; both carry the checkpoint path (or None). A run killed inside an
atomic write (SIGKILL) leaves a ``.<output name>.*.tmp`` file; the next run on that output removes it.

Under ``torchrun`` (``WORLD_SIZE > 1``) training is distributed (see ``distributed.py``):
``batch_size`` is the global batch, split evenly across ranks; only rank 0 evaluates, reports and
writes files; the other ranks return a result with ``output=None``.


Extra ``Trainer`` callbacks (``compress(..., callbacks=[...])``) run after the pipeline's own, on every rank:
a user's logging, or the tests' fault injection (a callback that stops the run at a chosen step).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import allocation, distributed
from .annealing import DensityAnnealing
from .api import load, resolve_device
from .budget import WORST_FLOAT, BudgetChoice, Trial, budget_bytes, choose_density
from .checkpoints import (
    CheckpointGuard,
    checkpoint_path,
    compare_checkpoint,
    existing_checkpoint,
    remove_stale_temp_files,
    write_checkpoint,
)
from .defaults import BY_BUDGET, INT8_UP_TO_DENSITY, by_budget
from .errors import CheckpointError, ConfigError, ModelError, worded
from .evaluation import NEAR_CHANCE_MARGIN, accuracy_warnings
from .export import _dense_leftovers, to_bytes
from .fileformat.constants import DENSE_PREFIX
from .fileformat.container import atomic_write
from .fileformat.reader import read_pemn
from .fileformat.summary import summarize
from .inputs import Architecture, Source, build_input_model, check_input_fits, module_source, read_source
from .interrupt import GracefulInterrupt, TrainingFailed, TrainingInterrupted
from .nn.topk import kept_count
from .options import ADDED_OPTIONS, CompressOptions, CompressResult, recipe, resolve_output
from .sources import CheckedLoader, DataSource, TorchSource, resolve_data
from .surgery import config_of, mask_, masked_layers, set_model_density_
from .tasks import CLASSIFICATION, Task, make_task
from .train import Callback, Trainer, TrainResult, _unwrap, evaluate

__all__ = [
    "CompressOptions",
    "CompressResult",
    "TrainingFailed",
    "TrainingInterrupted",
    "compress",
]

logger = logging.getLogger(__name__)
# the entries of a BudgetChoice the file records (provenance "target"); the same in the budget's trial header
_TARGET_PROVENANCE = ("budget_bytes", "target_size", "target_ratio", "density")


# ----------------------------------------------------------------------------------------------
# What the stages share and hand on


class StatusLines:
    """Status lines: to the log, and on stderr through rich when progress is on."""

    def __init__(self, *, enabled: bool):
        self.console = None
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True, soft_wrap=True)

    def info(self, message: str) -> None:
        logger.info(message)
        if self.console is not None:
            self.console.print(message, style="dim", markup=False, highlight=False)


@dataclass(frozen=True)
class RunContext:
    """Where this process runs: its place in the torchrun job, its device, its status lines."""

    dist: distributed.DistContext
    device: torch.device
    status: StatusLines
    started: float  # time.perf_counter() when compress() was called
    given: Given  # the objects compress() was handed besides its options


@dataclass(frozen=True)
class Given:
    """What ``compress`` was handed that is not an option (not JSON): a module, data objects, the task."""

    module: nn.Module | None = None  # the input model given in Python (None: options.model names it)
    train: Any = None  # torch data / arrays (None: the data set named by options.data)
    test: Any = None
    task: Task = CLASSIFICATION


@dataclass
class Checked:
    """``validate``'s result: what the run writes, continues, reads, and its recipe."""

    output: Path
    checkpoint_path: Path
    source: Source
    distill: bool
    recipe: dict  # every setting that changes the written file
    dense_accuracy: float | None  # measured by the interrupted run (None: measure it, or untrained input)
    resume_from: int | None  # the checkpoint's step (None: a fresh run)
    _checkpoint: dict | None  # the checkpoint to continue, until take_checkpoint() hands it over
    threads: int | None = None  # torch threads for the run (None: torch's default)
    threads_note: str | None = None  # why fewer threads than torch's default (a busy machine)
    resolved: dict = field(default_factory=dict)  # `auto` options the interrupted run resolved by its budget

    def take_checkpoint(self) -> dict | None:
        """The checkpoint to continue, handed over once so its tensors are freed when loaded."""
        checkpoint, self._checkpoint = self._checkpoint, None
        return checkpoint


@dataclass
class Prepared:
    """``prepare``'s result: the data, the input model, the masked student ready to train."""

    arch: Architecture
    data: DataSource
    train_loader: Any  # BatchLoader for arrays; a CheckedLoader over the user's torch data
    test_loader: Any | None  # None: torch data without a test split (nothing is measured)
    dense_accuracy: float | None  # the trained input's test metric (None: untrained input, or no test data)
    teacher: nn.Module | None  # the distillation teacher
    student: nn.Module  # the masked model, on the device
    model: nn.Module  # the student as trained (in DistributedDataParallel under torchrun)
    warnings: list[str]
    target: BudgetChoice | None = None  # the density chosen for --target-size / --target-ratio


@dataclass
class Trained:
    """``train``'s result: the trainer after ``fit`` and the guard that can still checkpoint it."""

    trainer: Trainer
    fit: TrainResult
    guard: CheckpointGuard


@dataclass(frozen=True)
class Written:
    """What ``finish`` wrote (main rank)."""

    output: str
    accuracy: float | None  # the task's metric on the test data (None: no test data)
    file_bytes: int
    dense_fp32_bytes: int  # the same model as a dense fp32 safetensors file (fileformat.summary)


# ----------------------------------------------------------------------------------------------
# The pipeline


def compress(model: Any, train: Any = None, *, test: Any = None, output: str | os.PathLike | None = None,
             loss: Callable | None = None, metric: Any = None, progress: bool = False,
             callbacks: Sequence[Callback] = (), **options: Any) -> CompressResult:
    """Compress ``model`` into a `.pemn` file: masks trained over fixed pseudo-random weights, the file
    written, loaded back and measured. What ``pemn compress`` runs, with the same options and defaults.

    Args:
        model: an ``nn.Module`` (treated as trained: it is the distillation teacher when its accuracy is
            above chance), a zoo name (``"convmixer_64_4"``), a state-dict file (``.pt``/``.pth``/``.safetensors``,
            with ``arch=``), a ``"module:function"`` factory, or a whole ``CompressOptions``.
        train: the training data: a torch ``DataLoader`` or ``Dataset`` (map-style or iterable; your
            transforms and normalization), an ``(x, y)`` pair of arrays (normalized by the tool), an
            ``ArrayDataset``, or a data set name (``"fashion-mnist"``, ``"data.npz"``, ``"module:function"``).
            None: the data set named by ``data=`` (default Fashion-MNIST).
        test: the test data, of the same kind as ``train`` (a name brings its own test split). The file
            records the metric measured on it; None with torch data: nothing is measured.
        output: the file to write (default ``<model stem>.pemn`` in the current folder).
        loss, metric: your own objective instead of classification: ``loss(output, target)`` -> scalar
            tensor, ``metric`` a ``pemn.Metric`` or ``(name, fn[, higher_is_better])`` with ``fn(output,
            target)`` -> batch mean (see ``tasks.py``). Recorded in the file's provenance.
        progress: progress bars and status lines on stderr.
        callbacks: extra ``Trainer`` callbacks (every rank), run after the pipeline's own.
        **options: any ``CompressOptions`` field (``density``, ``strategy``, ``epochs``, ``target_ratio``,
            ``resume``, ``threads``, ...; ``pemn_compress.defaults.OPTIONS`` lists them with their defaults).

    Returns:
        A ``CompressResult``: ``output``, ``accuracy`` (or ``metric``), ``file_bytes``, ``ratio``,
        ``density``, ``options``, ``history``, ``model`` (the trained masked model), ...

    Raises:
        ``PemnError`` subclasses for bad input (before training where possible), ``TrainingInterrupted``
        on Ctrl-C and ``TrainingFailed`` for an error once training has started; both name the
        checkpoint that ``resume=True`` continues.
    """
    opts, given = _options(model, train, test, output, options, loss, metric)
    started = time.perf_counter()
    dist, device = distributed.init(resolve_device(opts.device))
    prepared = trained = None
    try:
        run = RunContext(dist, device, StatusLines(enabled=progress and dist.is_main), started, given)
        checked = validate(opts, run)
        with _torch_threads(checked.threads), _left_as_given(given.module):
            if checked.threads_note and dist.is_main:
                run.status.info(checked.threads_note)
            prepared = prepare(opts, checked, run)
            trained = train_masks(opts, checked, prepared, run, progress=progress, callbacks=callbacks)
            return finish(opts, checked, prepared, trained, run)
    finally:
        if dist.enabled:  # free the DistributedDataParallel wrapper (and its hold on the process group) first
            prepared = trained = None
            gc.collect()
        distributed.teardown(dist)


def _options(model: Any, train: Any, test: Any, output: Any, settings: dict, loss: Any,
             metric: Any) -> tuple[CompressOptions, Given]:
    """``CompressOptions`` and the objects that are not options, from ``compress``'s arguments."""
    task = make_task(loss, metric)
    if isinstance(model, CompressOptions):
        if settings or output is not None:
            raise ConfigError("compress(CompressOptions(...)) takes no other options: put them in the CompressOptions")
        return model, Given(train=train, test=test, task=task)
    module = model if isinstance(model, nn.Module) else None
    if module is None and not isinstance(model, (str, os.PathLike)):
        raise ConfigError("model must be an nn.Module, a zoo name, a model file or module:function, found "
                          f"{type(model).__name__}")
    if "model" in settings:
        raise ConfigError("model is compress()'s first argument: do not pass it again as an option")
    spec = type(module).__name__ if module is not None else os.fspath(model)
    if "data" not in settings and train is not None and not isinstance(train, str):
        settings = {**settings, "data": _data_name(train)}
    elif isinstance(train, str):
        settings = {**settings, "data": train}
        train = None
    if isinstance(train, DataLoader) and train.batch_size:
        given_batch = settings.get("batch_size")
        if given_batch is not None and given_batch != train.batch_size:
            raise ConfigError(f"batch_size={given_batch} differs from your DataLoader's batch size {train.batch_size}: "
                              "the DataLoader's is used; leave batch_size out")
        settings = {**settings, "batch_size": train.batch_size}
    # from_dict refuses an unknown option by name (a typo never passes silently), listing the known ones
    path = None if output is None else os.fspath(output)
    opts = CompressOptions.from_dict({**settings, "model": spec, "output": path})
    return opts, Given(module=module, train=train, test=test, task=task)


def _data_name(train: Any) -> str:
    """The name a file records for data given as objects: their ``name`` attribute, else their class."""
    if isinstance(train, (tuple, list)):
        return "arrays"
    dataset = train.dataset if isinstance(train, DataLoader) else train
    name = getattr(dataset, "name", None)
    return name if isinstance(name, str) and name.strip() else type(dataset).__name__


@contextlib.contextmanager
def _left_as_given(module: nn.Module | None) -> Iterator[None]:
    """The user's module as it was given afterwards: its device, train/eval mode and ``requires_grad``
    flags (it served as the input and teacher; the student is a fresh copy)."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    modes = [m.training for m in module.modules()]
    device = next((t.device for t in [*module.parameters(), *module.buffers()]), None)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        for m, mode in zip(module.modules(), modes, strict=True):
            m.training = mode
        if device is not None:
            module.to(device)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block (None: torch's choice), restored afterwards."""
    if not threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _busy_cores(interval: float = 0.25) -> tuple[float, str]:
    """``(cores kept busy by other programs, how it was measured)``: Linux ``/proc/stat`` over ``interval``
    seconds (this process sleeps meanwhile), else the 1-minute load average."""
    def sample() -> tuple[list[int], float]:
        with open("/proc/stat", encoding="ascii") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
        own = os.times()
        return ticks, own.user + own.system

    try:
        before, own0 = sample()
        time.sleep(interval)
        after, own1 = sample()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0], "load average"
        except (OSError, AttributeError):  # pragma: no cover - no load average either
            return 0.0, "unknown"
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])  # idle + iowait
    if total <= 0:
        return 0.0, "now"
    own = (own1 - own0) * os.sysconf("SC_CLK_TCK")
    return max(0.0, (total - idle - own) / total * (os.cpu_count() or 1)), "now"


def choose_threads(requested: int | None) -> tuple[int | None, str | None]:
    """``(threads, note)``: ``requested``, else torch's default lowered to the cores this process may run on
    that other programs leave free; ``note`` says so when that is lower than torch's default (None, None:
    torch's default is kept)."""
    if requested:
        return requested, None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy, how = _busy_cores()
    free = max(1, cores - int(busy + 0.5))
    share = min(free, torch.get_num_threads())
    if share >= torch.get_num_threads():
        return None, None
    return share, (f"the machine is busy ({busy:.1f} of {cores} core(s) in use by other programs, {how}): training "
                   f"on {share} thread(s) so as not to oversubscribe it; --threads N sets the number")


# ----------------------------------------------------------------------------------------------
# 1. validate


def validate(options: CompressOptions, run: RunContext) -> Checked:
    """Everything that can be checked before reading data, in the order a user should hear about it:
    the output, the checkpoint, the input model, distillation, and the checkpoint's recipe."""
    output = resolve_output(options)
    ckpt_path = checkpoint_path(output)
    if run.dist.is_main:
        for stale in remove_stale_temp_files(output):
            run.status.info(f"removed {stale.name}, a temporary file left by a run that was killed while writing")
    checkpoint = existing_checkpoint(ckpt_path, resume=options.resume)
    module = run.given.module
    if module is not None and options.arch is not None:
        raise ConfigError("arch names the architecture of a state-dict file; the model you pass is its own: drop arch")
    if module is not None:
        _check_trainable(module)
    source = module_source(module) if module is not None else read_source(options.model, options.arch,
                                                                         options.allow_pickle)
    distill = _distill(options, source, run.given.task)
    if checkpoint is not None and options.distill is None and distill:
        distill = bool(checkpoint["recipe"].get("distill", distill))  # the interrupted run found its teacher useless
    settings = recipe(options, distill=distill, device_type=run.device.type, world_size=run.dist.world_size,
                      input_kind=source.kind)
    if not run.given.task.classification:
        settings["task"] = run.given.task.record()
    # the schedule trained with: an explicit one, else the budget's; with a target its density is chosen in
    # prepare, so until then the longest value stands in (the budget's trial header must not grow later)
    resolved = {}  # with a target, what the interrupted run resolved each `auto` to (prepare restores it)
    for name, longest in [*((n, high) for n, (_, high, _) in BY_BUDGET.items()), ("dense_dtype", "float16")]:
        asked = getattr(options, name)
        if options.target is None or asked != "auto":
            settings[name] = _dense_dtype(asked) if name == "dense_dtype" else by_budget(name, options.density, asked)
        else:  # resumed or not, the same text in the budget's trial header: the same density chosen
            settings[name] = longest
            if checkpoint is not None:
                resolved[name] = checkpoint["recipe"].get(name, ADDED_OPTIONS.get(name, longest))
    if checkpoint is not None:
        compare_checkpoint(ckpt_path, checkpoint, settings | resolved, source.sha256, absent=ADDED_OPTIONS)
    threads, note = choose_threads(options.threads)
    if checkpoint is not None and options.threads is None:  # the interrupted run's: float sums depend on it
        threads, note = checkpoint.get("threads") or threads, None
    return Checked(
        output=output,
        checkpoint_path=ckpt_path,
        source=source,
        distill=distill,
        recipe=settings,
        dense_accuracy=checkpoint.get("dense_accuracy") if checkpoint is not None else None,
        resume_from=int(checkpoint["trainer"].get("step", 0)) if checkpoint is not None else None,
        _checkpoint=checkpoint,
        threads=threads,
        threads_note=note,
        resolved=resolved,
    )


def _check_trainable(module: nn.Module) -> None:
    """A ``ModelError`` for a module whose BatchNorm was folded (``eps`` 0: what ``pemn.load`` returns from a
    file written with BatchNorm folded): training it would divide by a zero variance."""
    folded = [name for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and m.eps <= 0]
    if folded:
        raise ModelError(
            f"the model's BatchNorm {folded[0]!r} is folded (eps 0), as pemn.load returns a file written with "
            "fold_batchnorm=True: it cannot be trained again; compress the dense model you trained, or write the "
            "file with fold_batchnorm=False and load it with pemn.load(..., masked=True) to train on"
        )


def _distill(options: CompressOptions, source: Source, task: Task) -> bool:
    """Whether the student learns from the input model: by default exactly when it carries trained weights
    (and, measured in ``prepare``, its accuracy is above chance); never with a custom loss."""
    if not task.classification:
        if options.distill:
            raise worded(ConfigError, "distillation compares class logits: with your own loss= train without it "
                                      "(drop --distill)")
        return False
    distill = source.trained if options.distill is None else options.distill
    if distill and not source.trained:
        raise worded(
            ConfigError,
            f"distillation needs a trained input model (a state dict or a pickled module); {options.model} "
            f"is a {'zoo name' if source.kind == 'zoo' else 'module:function factory'}: use --no-distill",
        )
    return distill


# ----------------------------------------------------------------------------------------------
# 2. prepare


def prepare(options: CompressOptions, checked: Checked, run: RunContext) -> Prepared:
    """The data, the input model checked against it, the loaders, the dense input's accuracy and the
    teacher, and the masked student on the device."""
    task = run.given.task
    arch, data = _input_and_data(options, checked.source, run)
    warnings = []
    if arch.reference.get("kind") == "none":
        warnings.append(
            "the file records no architecture: load it with pemn.load(file, model=<your module>) or "
            "pemn eval FILE --arch module:Class (see pemn inspect FILE)"
        )
    outputs = check_input_fits(arch.dense, data.probe(), name=data.name, num_classes=data.num_classes,
                               classification=task.classification)
    train_loader, test_loader = _loaders(options, data, run, outputs)
    if checked.resume_from is not None and not getattr(train_loader, "replayable", True):
        raise worded(CheckpointError, f"--resume cannot replay your training DataLoader: "
                                      f"{getattr(train_loader.loader, 'why_not_replayable', 'its order is its own')}; "
                                      "pass a loader without its own generator (or the Dataset itself)")
    dense_accuracy, teacher = _dense_input(arch, checked, test_loader, run)
    if _useless_teacher(options, checked, dense_accuracy, outputs, warnings):
        teacher = None
    student = arch.dense if not checked.source.trained else arch.build_fresh()
    config = options.mask_config()
    target = None
    if options.target is not None:
        target, checked.recipe["dense_dtype"] = _choose_target(options, checked, student, arch, data, dense_accuracy)
        config = config.replace(density=target.density)
        for name in BY_BUDGET:
            checked.recipe[name] = checked.resolved.get(name) or by_budget(name, target.density, getattr(options, name))
        if run.dist.is_main:
            run.status.info(target.status_line() + f"; density schedule {checked.recipe['density_schedule']}, "
                                                   f"allocation {checked.recipe['allocation']}, "
                                                   f"leftovers {checked.recipe['dense_dtype']}")
    mask_(student, config)
    if checked.recipe["allocation"] == "erk":  # before training: annealing and the budget fit keep it
        allocation.allocate_(student)
    if options.score_scale != 1.0:  # a resumed run's scores come from its checkpoint
        with torch.no_grad():
            for _, layer in masked_layers(student):
                layer.scores.mul_(options.score_scale)
    student.train().to(run.device)
    model = distributed.wrap(student, run.dist, run.device)
    return Prepared(arch, data, train_loader, test_loader, dense_accuracy, teacher, student, model, warnings,
                    target)


def _useless_teacher(options: CompressOptions, checked: Checked, dense_accuracy: float | None,
                     outputs: int | None, warnings: list[str]) -> bool:
    """Whether the trained input scored near chance: then it teaches nothing, and distillation (on by
    default) is turned off, with a warning; asked for explicitly, it stays on with the warning."""
    if dense_accuracy is None or outputs is None or not checked.distill:
        return False
    chance = 1.0 / outputs
    if dense_accuracy >= chance + NEAR_CHANCE_MARGIN:
        return False
    found = f"the input model's accuracy {dense_accuracy:.4f} is near chance ({chance:.2f} for {outputs} classes)"
    if options.distill:
        warnings.append(f"{found}: distilling from it (as asked) teaches the masks little")
        return False
    warnings.append(f"{found}, so it is not a useful teacher: distillation is off (--distill forces it)")
    checked.distill = False
    checked.recipe["distill"] = False
    return True


def _loaders(options: CompressOptions, data: DataSource, run: RunContext, outputs: int | None) -> tuple[Any, Any]:
    """This rank's training loader (full batches, seeded order, its share under torchrun) and the test loader;
    a torch source's batches are checked as they arrive."""
    world = run.dist.world_size
    user_loader = data.train if isinstance(data, TorchSource) and isinstance(data.train, DataLoader) else None
    if user_loader is not None and user_loader.batch_size and user_loader.batch_size != options.batch_size:
        raise worded(ConfigError, f"your training DataLoader brings batches of {user_loader.batch_size}, not "
                                  f"--batch-size {options.batch_size}: pass --batch-size {user_loader.batch_size} "
                                  "(the file's recipe records it), or return the Dataset and let --batch-size batch it")
    own_batches = user_loader is None
    if own_batches and options.batch_size % world:
        raise ConfigError(f"batch_size {options.batch_size} must be divisible by the {world} torchrun processes")
    train_loader = data.train_loader(batch_size=options.batch_size, seed=options.seed, augment=options.augment,
                                     rank=run.dist.rank, world_size=world, device=run.device)
    test_loader = data.test_loader(batch_size=options.eval_batch_size, device=run.device)
    if isinstance(data, TorchSource):
        shape, classes = data.sample_shape, outputs
        train_loader = CheckedLoader(train_loader, what="training data", sample_shape=shape, num_outputs=classes)
        if test_loader is not None:
            test_loader = CheckedLoader(test_loader, what="test data", sample_shape=shape, num_outputs=classes)
    if len(train_loader) == 0:
        per = f" ({(data.num_train or 0) // world} per process)" if run.dist.enabled else ""
        raise worded(ConfigError, f"--batch-size {options.batch_size} is larger than the {data.num_train} training "
                                  f"samples{per}; lower --batch-size")
    return train_loader, test_loader


def _dense_dtype(asked: str) -> str:
    """The leftovers' storage without a budget: ``asked``, float16 for ``auto`` (``--dense-dtype``'s help)."""
    return "float16" if asked == "auto" else asked


def _write_options(options: CompressOptions, arch: Architecture, dense_dtype: str) -> dict[str, Any]:
    """How the file is encoded (``export``'s options): the same for the budget's trial and the file
    (``dense_dtype``: resolved, never ``auto``; int8 leftovers keep no more float16 outliers than a budget counts)."""
    budgeted = options.target_size is not None or options.target_ratio is not None
    return {"dense_dtype": dense_dtype, "fold_batchnorm": options.fold_batchnorm, "cap_outliers": budgeted,
            "architecture": arch.reference, "format_version": options.format_version}


def _choose_target(options: CompressOptions, checked: Checked, model: nn.Module, arch: Architecture,
                   data: DataSource, dense_accuracy: float | None) -> tuple[BudgetChoice, str]:
    """The density whose file is guaranteed within ``--target-size`` / ``--target-ratio`` (``budget.py``),
    chosen before training from a trial encoding of the unmasked ``model`` (not changed) with the
    provenance the file will record, and the leftovers' storage: ``--dense-dtype auto`` is float16, or int8
    (format version 3) where no density fits with float16, or where float16's density is at most
    ``INT8_UP_TO_DENSITY`` and int8's is higher; ConfigError when even one kept weight per layer is too large."""
    target_size = cast(int | None, options.target_size)  # CompressOptions parsed it to bytes

    def provenance(density: float) -> dict:
        choice = {"budget_bytes": budget, "target_size": target_size, "target_ratio": options.target_ratio,
                  "density": density}
        return _provenance(options, checked, data, dense_accuracy=None if dense_accuracy is None else WORST_FLOAT,
                           accuracy=WORST_FLOAT, target=choice)

    asked = checked.resolved.get("dense_dtype") or options.dense_dtype  # a resumed run: what it resolved
    if asked == "auto":  # int8 needs format version 3: never for a version 1 file
        candidates: tuple[str, ...] = ("float16", "int8") if options.format_version != 1 else ("float16",)
    else:
        candidates = (asked,)
    refusals = []  # (the smallest file, why): when no candidate fits, the one that comes closest speaks
    chosen: tuple[BudgetChoice, str] | None = None
    for dense_dtype in candidates:
        if chosen is not None and chosen[0].density > INT8_UP_TO_DENSITY:
            break  # float16 fits at a density int8 was not measured to beat
        budget = target_size or 1  # provisional: only the density-independent fp32 size is read before it is known
        trial = Trial(model, options.mask_config(), provenance=provenance, header_estimate=True,
                      **_write_options(options, arch, dense_dtype))
        if asked == "auto":  # int8 was (or will be) tried: never advised as a way out
            trial.shrinkable = tuple(option for option in trial.shrinkable if option != "dense_dtype_int8")
        budget = budget_bytes(target_size=target_size, target_ratio=options.target_ratio,
                              dense_fp32_bytes=trial.dense_fp32_bytes())
        try:
            choice = choose_density(trial, budget, target_size=target_size, target_ratio=options.target_ratio)
        except ConfigError as exc:
            refusals.append((trial.bound(trial.smallest_density()).total, exc))
            continue
        if chosen is None or choice.density > chosen[0].density:  # int8 only where it buys a higher density
            chosen = (choice, dense_dtype)
    if chosen is None:
        raise min(refusals, key=lambda refusal: refusal[0])[1]
    return chosen


def _input_and_data(options: CompressOptions, source: Source, run: RunContext) -> tuple[Architecture, DataSource]:
    """The input model and the data. A zoo model's shape follows the data; any other architecture is
    built (and so checked) before the data is read."""

    def input_model(data: DataSource | None) -> Architecture:
        return build_input_model(source, options.model, options.arch, options.arch_kwargs, options.seed,
                                 data.zoo_kwargs() if data is not None else None)

    arch = input_model(None) if source.kind != "zoo" else None
    data = resolve_data(run.given.train, run.given.test, spec=options.data, root=options.data_root,
                        max_train_samples=options.max_train_samples, seed=options.seed)
    run.status.info(data.describe())
    return arch or input_model(data), data


def _dense_input(arch: Architecture, checked: Checked, test_loader: Any | None,
                 run: RunContext) -> tuple[float | None, nn.Module | None]:
    """(the trained input's test metric, the teacher): measured by the main rank on a fresh run (a resumed
    run keeps the interrupted run's) and shared with every rank; the teacher only with distillation."""
    dense_accuracy = checked.dense_accuracy
    if not checked.source.trained or not (run.dist.is_main or checked.distill):
        return dense_accuracy, None
    arch.dense.to(run.device)
    if run.dist.is_main and checked.resume_from is None and test_loader is not None:
        task = run.given.task
        run.status.info("evaluating the dense input model ...")
        _, dense_accuracy = evaluate(arch.dense, test_loader, run.device, amp=False, task=task)
        run.status.info(f"dense model {task.metric_name}: {dense_accuracy:.4f}")
    if run.dist.enabled and checked.resume_from is None:  # every rank decides on the teacher alike
        shared = [dense_accuracy]
        torch.distributed.broadcast_object_list(shared, src=0)
        dense_accuracy = shared[0]
    return dense_accuracy, arch.dense if checked.distill else None


# ----------------------------------------------------------------------------------------------
# 3. train


class _EpochEval(Callback):
    """Main rank: test accuracy after every epoch but the last (measured on the written file instead)."""

    def __init__(self, loader: Any, device: torch.device, amp: bool, task: Task):
        self.loader, self.device, self.amp, self.task = loader, device, amp, task

    def on_epoch_end(self, trainer, metrics) -> None:
        if trainer.epoch >= trainer.config.epochs or trainer.step >= trainer.total_steps:
            return
        # the unwrapped module: a DDP forward here would wait for the other ranks
        metrics.eval_loss, metrics.eval_acc = evaluate(_unwrap(trainer.model), self.loader, self.device, self.amp,
                                                       task=self.task)


def train_masks(options: CompressOptions, checked: Checked, prepared: Prepared, run: RunContext, *, progress: bool,
                callbacks: Sequence[Callback] = ()) -> Trained:
    """Train the student's masks (continuing the checkpoint when resuming), checkpointing as it goes.

    Ctrl-C or an error leaves a checkpoint when the state allows one and raises
    ``TrainingInterrupted`` / ``TrainingFailed`` naming it.
    """
    guard = CheckpointGuard(_checkpoint_writer(options, checked, prepared, run), every=options.checkpoint_every,
                            saved_step=checked.resume_from)
    own: list[Callback] = [guard]
    bars = None
    if run.dist.is_main and prepared.test_loader is not None:
        own.insert(0, _EpochEval(prepared.test_loader, run.device, options.amp, run.given.task))
        if progress:
            from .progress import RichProgress

            bars = RichProgress(console=run.status.console)
            own.append(bars)
    if checked.recipe["density_schedule"] == "anneal":  # first: every other callback sees the step's density
        own.insert(0, DensityAnnealing())
    trainer = Trainer(prepared.model, prepared.train_loader, None, options.train_config(),
                      teacher=prepared.teacher, callbacks=own + list(callbacks), device=run.device,
                      task=run.given.task)
    checkpoint = checked.take_checkpoint()
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint["trainer"])
        run.status.info(f"resuming {checked.checkpoint_path} at step {trainer.step} of {trainer.total_steps}")
    del checkpoint

    graceful = GracefulInterrupt(trainer, run.status, enabled=not run.dist.enabled)
    guard.attach(prepared.student)
    try:
        with _stops_resumably(guard, trainer, checked.checkpoint_path,
                              on_stop=bars.progress.stop if bars is not None else None):
            with graceful:
                fit = trainer.fit()
            if graceful.requested:
                raise KeyboardInterrupt
            distributed.sync_buffers(prepared.student, run.dist)
    finally:
        guard.detach()
    return Trained(trainer, fit, guard)


def _checkpoint_writer(options: CompressOptions, checked: Checked, prepared: Prepared,
                       run: RunContext) -> Callable[[Trainer], None] | None:
    """How the main rank writes a checkpoint of the trainer (None on the other ranks)."""
    if not run.dist.is_main:
        return None
    return functools.partial(
        write_checkpoint, checked.checkpoint_path, options=options.to_dict(), recipe=checked.recipe,
        input_sha256=checked.source.sha256, dense_accuracy=prepared.dense_accuracy, threads=checked.threads,
    )  # fmt: skip


@contextlib.contextmanager
def _stops_resumably(guard: CheckpointGuard, trainer: Trainer, path: Path, *,
                     on_stop: Callable[[], None] | None = None) -> Iterator[None]:
    """Turn a run stopping in this block into ``TrainingInterrupted`` (Ctrl-C) or ``TrainingFailed``
    (an error), after saving the trainer's state when it is consistent; both name the checkpoint
    that holds the run's progress. ``on_stop`` runs first (the progress bars give the terminal back)."""
    try:
        yield
    except BaseException as exc:
        if on_stop is not None:
            on_stop()
        saved = guard.save_on_failure(trainer, path)
        step = guard.saved_step if saved else None
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, TrainingInterrupted):
            raise TrainingInterrupted(saved, step) from None
        if isinstance(exc, Exception) and not isinstance(exc, TrainingFailed):
            raise TrainingFailed(exc, saved, step) from exc
        raise


# ----------------------------------------------------------------------------------------------
# 4. finish


def finish(options: CompressOptions, checked: Checked, prepared: Prepared, trained: Trained,
           run: RunContext) -> CompressResult:
    """The main rank writes the file (an error still leaves a checkpoint to resume from), then
    removes the checkpoint; every rank returns what the run did."""
    written = None
    warnings = list(prepared.warnings)
    if run.dist.is_main:
        with _stops_resumably(trained.guard, trained.trainer, checked.checkpoint_path):
            written = _write(options, checked, prepared, run)
        checked.checkpoint_path.unlink(missing_ok=True)
        if run.given.task.classification and prepared.data.num_classes is not None:
            warnings.extend(accuracy_warnings(written.accuracy, prepared.dense_accuracy, prepared.data.num_classes))
    return _result(options, checked, prepared, trained, written, run, warnings)


def _provenance(options: CompressOptions, checked: Checked, data: DataSource, *, dense_accuracy: float | None,
                accuracy: float | None, target: dict | None, task: Task = CLASSIFICATION) -> dict:
    """What the file records about its making; ``accuracy`` (the task's metric) None: not measured (left out).

    Classification records ``dense_accuracy`` and ``accuracy``; another task records ``task`` (loss, metric
    name, direction) and ``metric`` / ``dense_metric`` as ``{"name", "value"}``."""
    provenance: dict[str, Any] = {"dataset": options.data}
    if task.classification:
        provenance["dense_accuracy"] = dense_accuracy
    else:
        provenance["task"] = task.record()
        if dense_accuracy is not None:
            provenance["dense_metric"] = {"name": task.metric_name, "value": dense_accuracy}
    provenance.update(data.provenance())
    if data.num_test is not None:
        provenance["evaluation"] = {"split": "test", "samples": data.num_test, "batch_size": options.eval_batch_size}
    provenance["recipe"] = checked.recipe
    if target is not None:
        provenance["target"] = target
    if accuracy is not None:
        _record_measured(provenance, task, accuracy)
    return provenance


def _record_measured(provenance: dict, task: Task, value: float) -> None:
    """The file's measured metric: ``accuracy`` (classification) or ``metric``."""
    if task.classification:
        provenance["accuracy"] = value
    else:
        provenance["metric"] = {"name": task.metric_name, "value": value}


def _write(options: CompressOptions, checked: Checked, prepared: Prepared, run: RunContext) -> Written:
    """Encode (BatchNorm folded unless --no-fold-batchnorm), load back as pemn.load will, measure the
    accuracy, write atomically; never a file over the target's budget."""
    target = prepared.target
    choice = None if target is None else {k: v for k, v in target.to_dict().items() if k in _TARGET_PROVENANCE}
    task = run.given.task
    provenance = _provenance(options, checked, prepared.data, dense_accuracy=prepared.dense_accuracy, accuracy=None,
                             target=choice, task=task)
    write_options = _write_options(options, prepared.arch, checked.recipe["dense_dtype"])
    accuracy = None
    while True:
        if target is not None:
            _fit(prepared.student, provenance, target, write_options, run, task)
        run.status.info("measuring the compressed model as it will be loaded ...")
        blob = to_bytes(prepared.student, provenance=provenance, **write_options)
        deployed = load(blob, device=run.device, model=prepared.arch.build_fresh())
        if prepared.test_loader is not None:
            _, accuracy = evaluate(deployed, prepared.test_loader, run.device, amp=False, task=task)
            _record_measured(provenance, task, accuracy)
        blob = to_bytes(prepared.student, provenance=provenance, **write_options)
        if target is None or len(blob) <= target.budget:
            break
        # the measured digits deflated longer than the placeholder's: fit again with them (each round lowers the
        # density or fits, so this ends)
    atomic_write(checked.output, blob)
    totals = summarize(read_pemn(checked.output), checked.output)["totals"]
    written = Written(str(checked.output), accuracy, int(totals["file_bytes"]), int(totals["dense_fp32_bytes"]))
    measured = f", {task.metric_name} {accuracy:.4f}" if accuracy is not None else ""
    run.status.info(f"wrote {checked.output}: {written.file_bytes:,} bytes{measured}")
    return written


def _fit(student: nn.Module, provenance: dict, target: BudgetChoice, write_options: dict, run: RunContext,
         task: Task = CLASSIFICATION) -> None:
    """Make the trained file fit ``target.budget`` (an accuracy not yet measured counted at its longest).

    The density was chosen from an estimate of the deflated header (``budget.Trial(header_estimate=True)``);
    should the file be over it all the same, first the provenance's recipe is left out (informative only),
    then the density is lowered (the largest layer keeps fewer weights, bisected; every mask keeps a subset of
    what it kept: the lowest scores go; a model allocated across layers stays so, ``surgery.ALLOCATOR``).
    ConfigError when even one weight per layer does not fit: a dense leftover outside float16's range is
    stored in float32, the one size the budget cannot foresee.
    """

    def size() -> int:
        measured = {**provenance}
        if task.classification:
            measured.setdefault("accuracy", WORST_FLOAT)
        else:
            measured.setdefault("metric", {"name": task.metric_name, "value": WORST_FLOAT})
        return len(to_bytes(student, provenance=measured, **write_options))

    over = size() - target.budget
    if over <= 0:
        return
    if "recipe" in provenance:
        provenance.pop("recipe")
        run.status.info(f"the trained file is {over:,} B over the budget: the recipe is left out of its provenance")
        if size() <= target.budget:
            return
    sizes = [math.prod(layer.source.shape) for _, layer in masked_layers(student)]
    largest, start = max(sizes), config_of(student).density
    lo, hi = 0, kept_count(start, largest)  # fits(lo) assumed, not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        set_model_density_(student, mid / largest)
        if size() <= target.budget:
            lo = mid
        else:
            hi = mid
    if lo == 0:
        set_model_density_(student, start)
        raise worded(ConfigError, f"the trained file is over the {target.budget:,} B target even with one kept "
                                  f"weight per layer: {_why_over(student, write_options)}")
    set_model_density_(student, lo / largest)
    provenance["target"] = {**provenance.get("target", {}), "density": lo / largest}
    run.status.info(f"the trained file was {over:,} B over the budget: density lowered from {start:g} to "
                    f"{lo / largest:g} (the lowest-score weights dropped)")


def _why_over(student: nn.Module, write_options: dict) -> str:
    """Why a file the budget chose a density for is over it at any density: a float16 file's leftover
    outside float16's range stored in float32 (the one size the budget cannot foresee), or a header larger
    than its estimate (the header's digits: kept counts, accuracies, digests). int8 leftovers keep no more
    float16 outliers than the budget counted (``q8.allot_outliers``)."""
    dense_dtype = write_options["dense_dtype"]
    if dense_dtype in ("float16", "int8"):
        _, groups = _dense_leftovers(student, dense_dtype=dense_dtype, fold_batchnorm=write_options["fold_batchnorm"])
        if DENSE_PREFIX + "f32" in groups:
            return ("a dense leftover left float16's range and is stored in float32; rerun with --dense-dtype "
                    "float32 (then counted in the budget)")
    return "its header came out larger than the budget estimated; rerun with a target a few hundred bytes larger"


def _result(options: CompressOptions, checked: Checked, prepared: Prepared, trained: Trained, written: Written | None,
            run: RunContext, warnings: list[str]) -> CompressResult:
    trainer, fit = trained.trainer, trained.fit
    file_bytes = written.file_bytes if written else None
    fp32_bytes = written.dense_fp32_bytes if written else None
    task = run.given.task
    measured = written.accuracy if written else None
    return CompressResult(
        output=written.output if written else None,
        input=options.model,
        input_kind=checked.source.kind,
        architecture=prepared.arch.reference,
        dataset=options.data,
        train_samples=prepared.data.num_train,
        test_samples=prepared.data.num_test,
        dense_accuracy=prepared.dense_accuracy if task.classification else None,
        accuracy=measured if task.classification else None,
        file_bytes=file_bytes,
        dense_fp32_bytes=fp32_bytes,
        ratio=fp32_bytes / file_bytes if fp32_bytes is not None and file_bytes else None,
        steps=trainer.step,
        epochs=trainer.epoch,
        train_seconds=fit.train_seconds,
        seconds=time.perf_counter() - run.started,
        images_per_sec=fit.images_per_sec,
        resumed=options.resume,
        distill=checked.distill,
        device=str(run.device),
        world_size=run.dist.world_size,
        rank=run.dist.rank,
        options=options.to_dict(),
        history=[asdict(m) for m in trainer.history],
        warnings=warnings,
        target=prepared.target.to_dict() if prepared.target is not None else None,
        metric_name=task.metric_name,
        metric=measured,
        dense_metric=prepared.dense_accuracy,
        higher_is_better=task.higher_is_better,
        threads=checked.threads or torch.get_num_threads(),
        density_schedule=checked.recipe["density_schedule"],
        allocation=checked.recipe["allocation"],
        model=prepared.student,
    )
