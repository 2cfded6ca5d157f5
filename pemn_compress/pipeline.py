"""The compress pipeline: a user's model in, a trained `.pemn` file out (``pemn compress``).

    from pemn_compress.compress import CompressOptions, compress
    result = compress(CompressOptions(model="model.pt", arch="convmixer_64_4", data="fashion-mnist"))
    result.accuracy, result.file_bytes, result.ratio

``compress(options)`` runs four stages, each a function of the previous ones' typed results:

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
3. ``train`` -> ``Trained``: ``Trainer.fit`` with checkpoints and graceful Ctrl-C.
4. ``finish`` -> ``CompressResult``: the file is encoded (BatchNorm folded unless ``fold_batchnorm=False``;
   the checkpoint always holds the unfolded trainable state), loaded back exactly as ``pemn.load`` will
   load it, its test accuracy is measured, and it is written atomically with ``provenance =
   {dataset, accuracy, dense_accuracy, normalization, evaluation, recipe, ...}``; the checkpoint is
   then removed.

Inputs (``options.model``; see ``inputs.py``): a zoo name (its ``in_chans``/``num_classes``/
``img_size`` follow the data set), a state dict (``.pt``/``.pth`` read with ``torch.load(weights_only=
True)``, or ``.safetensors``) with ``arch``, a ``module:function`` factory (imports user code), or a
whole pickled module (only with ``allow_pickle=True``: it runs code from the file). State dicts and
pickled modules carry trained weights; zoo names and factories do not.

Distillation (``distill``): None (the default) turns it on exactly when the input carries trained
weights: the student learns from ``(1 - alpha) * CE + alpha * T^2 * KL(teacher || student)``.

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

Extra ``Trainer`` callbacks (``compress(options, callbacks=[...])``) run after the pipeline's own;
tests and the reliability campaign interrupt runs with ``faults.InterruptAfterSteps`` this way.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from . import distributed
from .allocation import set_model_density_
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
from .data import ArrayDataset, BatchLoader, get_dataset
from .errors import ConfigError, worded
from .evaluation import accuracy_warnings
from .export import to_bytes
from .fileformat.container import atomic_write
from .fileformat.reader import read_pemn
from .fileformat.summary import summarize
from .inputs import Architecture, Source, build_input_model, check_data_fits, read_source
from .interrupt import GracefulInterrupt, TrainingFailed, TrainingInterrupted
from .nn.topk import kept_count
from .options import ADDED_OPTIONS, CompressOptions, CompressResult, recipe, resolve_output
from .surgery import config_of, mask_, masked_layers
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

    def take_checkpoint(self) -> dict | None:
        """The checkpoint to continue, handed over once so its tensors are freed when loaded."""
        checkpoint, self._checkpoint = self._checkpoint, None
        return checkpoint


@dataclass
class Prepared:
    """``prepare``'s result: the data, the input model, the masked student ready to train."""

    arch: Architecture
    data: ArrayDataset
    train_loader: BatchLoader
    test_loader: BatchLoader
    dense_accuracy: float | None  # test accuracy of the trained input (None: untrained input)
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
    accuracy: float
    file_bytes: int
    dense_fp32_bytes: int  # the same model as a dense fp32 safetensors file (fileformat.summary)


# ----------------------------------------------------------------------------------------------
# The pipeline


def compress(options: CompressOptions, *, progress: bool = False, callbacks: Sequence[Callback] = ()) -> CompressResult:
    """Train a PEMN version of ``options.model`` and write it to ``options.output`` (see the module docstring).

    progress: draw rich progress bars and status lines on stderr (main rank only).
    callbacks: extra ``Trainer`` callbacks (every rank), run after the pipeline's own.
    Raises ``PemnError`` subclasses for bad input (before training where possible),
    ``TrainingInterrupted`` on Ctrl-C and ``TrainingFailed`` for an error once training has started.
    """
    if not isinstance(options, CompressOptions):
        raise ConfigError(f"compress() takes CompressOptions, found {type(options).__name__}")
    started = time.perf_counter()
    with _torch_threads(options.threads):
        dist, device = distributed.init(resolve_device(options.device))
        prepared = trained = None
        try:
            run = RunContext(dist, device, StatusLines(enabled=progress and dist.is_main), started)
            checked = validate(options, run)
            prepared = prepare(options, checked, run)
            trained = train(options, checked, prepared, run, progress=progress, callbacks=callbacks)
            return finish(options, checked, prepared, trained, run)
        finally:
            if dist.enabled:  # free the DistributedDataParallel wrapper (and its hold on the process group) first
                prepared = trained = None
                gc.collect()
            distributed.teardown(dist)


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
    source = read_source(options.model, options.arch, options.allow_pickle)
    distill = _distill(options, source)
    settings = recipe(options, distill=distill, device_type=run.device.type, world_size=run.dist.world_size,
                      input_kind=source.kind)
    if checkpoint is not None:
        compare_checkpoint(ckpt_path, checkpoint, settings, source.sha256, absent=ADDED_OPTIONS)
    return Checked(
        output=output,
        checkpoint_path=ckpt_path,
        source=source,
        distill=distill,
        recipe=settings,
        dense_accuracy=checkpoint.get("dense_accuracy") if checkpoint is not None else None,
        resume_from=int(checkpoint["trainer"].get("step", 0)) if checkpoint is not None else None,
        _checkpoint=checkpoint,
    )


def _distill(options: CompressOptions, source: Source) -> bool:
    """Whether the student learns from the input model: by default exactly when it carries trained weights."""
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
    arch, data = _input_and_data(options, checked.source, run.status)
    warnings = []
    if arch.reference.get("kind") == "none":
        warnings.append(
            "the file records no architecture: load it with pemn.load(file, model=<your module>) or "
            "pemn eval FILE --arch module:Class (see pemn inspect FILE)"
        )
    check_data_fits(arch.dense, data)
    train_loader = _train_loader(options, data, run)
    test_loader = BatchLoader.from_dataset(data, "test", batch_size=options.eval_batch_size, device=run.device)
    dense_accuracy, teacher = _dense_input(arch, checked, test_loader, run)
    student = arch.dense if not checked.source.trained else arch.build_fresh()
    config = options.mask_config()
    target = None
    if options.target is not None:
        target = _choose_target(options, checked, student, arch, data, dense_accuracy)
        config = config.replace(density=target.density)
        if run.dist.is_main:
            run.status.info(target.status_line())
    mask_(student, config)
    if options.score_scale != 1.0:  # a resumed run's scores come from its checkpoint
        with torch.no_grad():
            for _, layer in masked_layers(student):
                layer.scores.mul_(options.score_scale)
    student.train().to(run.device)
    model = distributed.wrap(student, run.dist, run.device)
    return Prepared(arch, data, train_loader, test_loader, dense_accuracy, teacher, student, model, warnings,
                    target)


def _write_options(options: CompressOptions, arch: Architecture) -> dict[str, Any]:
    """How the file is encoded (``export``'s options): the same for the budget's trial and the file."""
    return {"dense_dtype": options.dense_dtype, "fold_batchnorm": options.fold_batchnorm,
            "architecture": arch.reference, "format_version": options.format_version}


def _choose_target(options: CompressOptions, checked: Checked, model: nn.Module, arch: Architecture,
                   data: ArrayDataset, dense_accuracy: float | None) -> BudgetChoice:
    """The density whose file is guaranteed within ``--target-size`` / ``--target-ratio`` (``budget.py``),
    chosen before training from a trial encoding of the unmasked ``model`` (not changed) with the
    provenance the file will record; ConfigError when even one kept weight per layer is too large."""
    target_size = cast(int | None, options.target_size)  # CompressOptions parsed it to bytes

    def provenance(density: float) -> dict:
        choice = {"budget_bytes": budget, "target_size": target_size, "target_ratio": options.target_ratio,
                  "density": density}
        return _provenance(options, checked, data, dense_accuracy=None if dense_accuracy is None else WORST_FLOAT,
                           accuracy=WORST_FLOAT, target=choice)

    budget = target_size or 1  # provisional: only the density-independent fp32 size is read before it is known
    trial = Trial(model, options.mask_config(), provenance=provenance, header_estimate=True,
                  **_write_options(options, arch))
    budget = budget_bytes(target_size=target_size, target_ratio=options.target_ratio,
                          dense_fp32_bytes=trial.dense_fp32_bytes())
    return choose_density(trial, budget, target_size=target_size, target_ratio=options.target_ratio)


def _input_and_data(options: CompressOptions, source: Source, status: StatusLines) -> tuple[Architecture, ArrayDataset]:
    """The input model and the data set. A zoo model's shape follows the data; any other
    architecture is built (and so checked) before the data is loaded."""

    def input_model(data: ArrayDataset | None) -> Architecture:
        return build_input_model(source, options.model, options.arch, options.arch_kwargs, options.seed, data)

    arch = input_model(None) if source.kind != "zoo" else None
    data = get_dataset(options.data, options.data_root)
    full_train = data.num_train
    if options.max_train_samples is not None and options.max_train_samples < data.num_train:
        data = data.subset(options.max_train_samples, None, seed=options.seed)
    status.info(
        f"data {options.data}: {data.num_train:,} training images"
        f"{f' (of {full_train:,})' if data.num_train != full_train else ''}, {data.num_test:,} test images "
        f"{data.image_shape}, {data.num_classes} classes"
    )
    return arch or input_model(data), data


def _train_loader(options: CompressOptions, data: ArrayDataset, run: RunContext) -> BatchLoader:
    """This rank's share of every global batch (full batches only), shuffled and augmented by seed."""
    world = run.dist.world_size
    if options.batch_size % world:
        raise ConfigError(f"batch_size {options.batch_size} must be divisible by the {world} torchrun processes")
    loader = BatchLoader.from_dataset(
        data, "train", batch_size=options.batch_size // world, shuffle=True, seed=options.seed,
        crop_padding=data.suggested_crop_padding if options.augment else 0, hflip=options.augment,
        drop_last=True, rank=run.dist.rank, world_size=world, device=run.device,
    )  # fmt: skip
    if len(loader) == 0:
        raise worded(
            ConfigError,
            f"--batch-size {options.batch_size} is larger than the {data.num_train} training images"
            f"{f' ({data.num_train // world} per process)' if run.dist.enabled else ''}; lower --batch-size",
        )
    return loader


def _dense_input(arch: Architecture, checked: Checked, test_loader: BatchLoader,
                 run: RunContext) -> tuple[float | None, nn.Module | None]:
    """(the trained input's test accuracy, the teacher): measured by the main rank on a fresh run
    (a resumed run keeps the interrupted run's), the teacher only with distillation."""
    dense_accuracy = checked.dense_accuracy
    if not checked.source.trained or not (run.dist.is_main or checked.distill):
        return dense_accuracy, None
    arch.dense.to(run.device)
    if run.dist.is_main and checked.resume_from is None:
        run.status.info("evaluating the dense input model ...")
        _, dense_accuracy = evaluate(arch.dense, test_loader, run.device, amp=False)
        run.status.info(f"dense model accuracy: {dense_accuracy:.4f}")
    return dense_accuracy, arch.dense if checked.distill else None


# ----------------------------------------------------------------------------------------------
# 3. train


class _EpochEval(Callback):
    """Main rank: test accuracy after every epoch but the last (measured on the written file instead)."""

    def __init__(self, loader: BatchLoader, device: torch.device, amp: bool):
        self.loader, self.device, self.amp = loader, device, amp

    def on_epoch_end(self, trainer, metrics) -> None:
        if trainer.epoch >= trainer.config.epochs or trainer.step >= trainer.total_steps:
            return
        # the unwrapped module: a DDP forward here would wait for the other ranks
        metrics.eval_loss, metrics.eval_acc = evaluate(_unwrap(trainer.model), self.loader, self.device, self.amp)


def train(options: CompressOptions, checked: Checked, prepared: Prepared, run: RunContext, *, progress: bool,
          callbacks: Sequence[Callback] = ()) -> Trained:
    """Train the student's masks (continuing the checkpoint when resuming), checkpointing as it goes.

    Ctrl-C or an error leaves a checkpoint when the state allows one and raises
    ``TrainingInterrupted`` / ``TrainingFailed`` naming it.
    """
    guard = CheckpointGuard(_checkpoint_writer(options, checked, prepared, run), every=options.checkpoint_every,
                            saved_step=checked.resume_from)
    own: list[Callback] = [guard]
    bars = None
    if run.dist.is_main:
        own.insert(0, _EpochEval(prepared.test_loader, run.device, options.amp))
        if progress:
            from .progress import RichProgress

            bars = RichProgress(console=run.status.console)
            own.append(bars)
    if options.density_schedule == "anneal":  # first: every other callback sees the step's density
        own.insert(0, DensityAnnealing())
    trainer = Trainer(prepared.model, prepared.train_loader, None, options.train_config(checked.distill),
                      teacher=prepared.teacher, callbacks=own + list(callbacks), device=run.device)
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
        input_sha256=checked.source.sha256, dense_accuracy=prepared.dense_accuracy,
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
        num_classes = cast(int, prepared.data.num_classes)  # ArrayDataset sets it on construction
        warnings.extend(accuracy_warnings(written.accuracy, prepared.dense_accuracy, num_classes))
    return _result(options, checked, prepared, trained, written, run, warnings)


def _provenance(options: CompressOptions, checked: Checked, data: ArrayDataset, *, dense_accuracy: float | None,
                accuracy: float | None, target: dict | None) -> dict:
    """What the file records about its making; ``accuracy`` None: not measured yet (left out)."""
    mean, std = cast(tuple, data.mean), cast(tuple, data.std)  # ArrayDataset sets them on construction
    provenance = {
        "dataset": options.data,
        "dense_accuracy": dense_accuracy,
        "normalization": {"mean": list(mean), "std": list(std)},
        "evaluation": {"split": "test", "samples": data.num_test, "batch_size": options.eval_batch_size},
        "image_shape": list(data.image_shape),
        "num_classes": data.num_classes,
        "train_samples": data.num_train,
        "recipe": checked.recipe,
    }
    if target is not None:
        provenance["target"] = target
    if accuracy is not None:
        provenance["accuracy"] = accuracy
    return provenance


def _write(options: CompressOptions, checked: Checked, prepared: Prepared, run: RunContext) -> Written:
    """Encode (BatchNorm folded unless --no-fold-batchnorm), load back as pemn.load will, measure the
    accuracy, write atomically; never a file over the target's budget."""
    target = prepared.target
    choice = None if target is None else {k: v for k, v in target.to_dict().items() if k in _TARGET_PROVENANCE}
    provenance = _provenance(options, checked, prepared.data, dense_accuracy=prepared.dense_accuracy, accuracy=None,
                             target=choice)
    write_options = _write_options(options, prepared.arch)
    while True:
        if target is not None:
            _fit(prepared.student, provenance, target, write_options, run)
        run.status.info("measuring the compressed model as it will be loaded ...")
        blob = to_bytes(prepared.student, provenance=provenance, **write_options)
        deployed = load(blob, device=run.device, model=prepared.arch.build_fresh())
        _, accuracy = evaluate(deployed, prepared.test_loader, run.device, amp=False)
        provenance["accuracy"] = accuracy
        blob = to_bytes(prepared.student, provenance=provenance, **write_options)
        if target is None or len(blob) <= target.budget:
            break
        # the measured digits deflated longer than the placeholder's: fit again with them (each round lowers the
        # density or fits, so this ends)
    atomic_write(checked.output, blob)
    totals = summarize(read_pemn(checked.output), checked.output)["totals"]
    written = Written(str(checked.output), accuracy, int(totals["file_bytes"]), int(totals["dense_fp32_bytes"]))
    run.status.info(f"wrote {checked.output}: {written.file_bytes:,} bytes, accuracy {accuracy:.4f}")
    return written


def _fit(student: nn.Module, provenance: dict, target: BudgetChoice, write_options: dict, run: RunContext) -> None:
    """Make the trained file fit ``target.budget`` (an accuracy not yet measured counted at its longest).

    The density was chosen from an estimate of the deflated header (``budget.Trial(header_estimate=True)``);
    should the file be over it all the same, first the provenance's recipe is left out (informative only),
    then the density is lowered (the largest layer keeps fewer weights, bisected; every mask keeps a subset of
    what it kept: the lowest scores go; a model allocated across layers stays so, ``allocation.py``).
    ConfigError when even one weight per layer does not fit: a dense leftover outside float16's range is
    stored in float32, the one size the budget cannot foresee.
    """

    def size() -> int:
        accuracy = provenance.get("accuracy", WORST_FLOAT)
        return len(to_bytes(student, provenance={**provenance, "accuracy": accuracy}, **write_options))

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
        raise worded(
            ConfigError,
            f"the trained file is over the {target.budget:,} B target even with one kept weight per layer: a dense "
            "leftover left float16's range and is stored in float32; rerun with --dense-dtype float32 (then "
            "counted in the budget)",
        )
    set_model_density_(student, lo / largest)
    provenance["target"] = {**provenance.get("target", {}), "density": lo / largest}
    run.status.info(f"the trained file was {over:,} B over the budget: density lowered from {start:g} to "
                    f"{lo / largest:g} (the lowest-score weights dropped)")


def _result(options: CompressOptions, checked: Checked, prepared: Prepared, trained: Trained, written: Written | None,
            run: RunContext, warnings: list[str]) -> CompressResult:
    trainer, fit = trained.trainer, trained.fit
    file_bytes = written.file_bytes if written else None
    fp32_bytes = written.dense_fp32_bytes if written else None
    return CompressResult(
        output=written.output if written else None,
        input=options.model,
        input_kind=checked.source.kind,
        architecture=prepared.arch.reference,
        dataset=options.data,
        train_samples=prepared.data.num_train,
        test_samples=prepared.data.num_test,
        dense_accuracy=prepared.dense_accuracy,
        accuracy=written.accuracy if written else None,
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
        model=prepared.student,
    )
