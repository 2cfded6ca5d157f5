"""The compress pipeline: a user's model in, a trained `.pemn` file out (``pemn compress``).

    from pemn_compress.compress import CompressOptions, compress
    result = compress(CompressOptions(model="model.pt", arch="convmixer_64_4", data="fashion-mnist"))
    result.accuracy, result.file_bytes, result.ratio

``compress(options)`` runs, in this order:

1. validation, before any training: the options (``ConfigError``), the output folder (exists,
   writable), the checkpoint (``--resume`` needs one with the same settings; a stray one is never
   overwritten silently), the input model, the data set (``DataNotFoundError`` says how to get it),
   and one dummy forward with a batch of the data's shape (``DataError`` naming both shapes);
2. when the input carries trained weights: the dense model's test accuracy (``dense_accuracy``),
   and optionally that model as the distillation teacher;
3. ``mask_`` on a fresh copy of the architecture, then ``Trainer.fit`` with checkpoints;
4. the file is encoded, loaded back exactly as ``pemn.load`` will load it, its test accuracy is
   measured, and it is written atomically with ``provenance = {dataset, accuracy, dense_accuracy,
   normalization, evaluation, recipe, ...}``; the checkpoint is then removed.

Inputs (``options.model``; see ``inputs.py``): a zoo name (its ``in_chans``/``num_classes``/
``img_size`` follow the data set), a state dict (``.pt``/``.pth`` read with ``torch.load(weights_only=
True)``, or ``.safetensors``) with ``arch``, a ``module:function`` factory (imports user code), or a
whole pickled module (only with ``allow_pickle=True``: it runs code from the file). State dicts and
pickled modules carry trained weights; zoo names and factories do not.

Distillation (``distill``): None (the default) turns it on exactly when the input carries trained
weights: the student learns from ``(1 - alpha) * CE + alpha * T^2 * KL(teacher || student)``.

Checkpoints: ``<output>.ckpt``, written atomically by the main rank every ``checkpoint_every``
steps (None: after every epoch; 0: only on interruption), on Ctrl-C and on any exception raised
while the trainer's state is consistent (between two optimizer steps; a crash inside a step keeps
the previous checkpoint). It is a ``torch.save`` of plain tensors, dicts, lists, numbers and
strings, read back with ``torch.load(weights_only=True)``. ``resume=True`` continues it; a resumed
run writes a file byte-identical to an uninterrupted one. The first Ctrl-C lets the current batch
finish (so the checkpoint is exact); a second one stops at once. Interruption raises
``TrainingInterrupted`` (a ``KeyboardInterrupt``) carrying the checkpoint path. A run killed inside
an atomic write (SIGKILL) leaves a ``.<output name>.*.tmp`` file; the next run on that output removes it.

Under ``torchrun`` (``WORLD_SIZE > 1``) training is distributed (see ``distributed.py``):
``batch_size`` is the global batch, split evenly across ranks; only rank 0 evaluates, reports and
writes files; the other ranks return a result with ``output=None``.

Testing hooks (environment variables, read only when training starts; for the test suite):
``PEMN_TEST_INTERRUPT_AFTER_STEPS=K`` raises ``KeyboardInterrupt`` right after optimizer step K
(as a crash or a second Ctrl-C would); with ``PEMN_TEST_INTERRUPT_SIGNAL=1`` it sends SIGINT to
the process instead (a first Ctrl-C).
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import io
import json
import logging
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .api import load, resolve_device, save
from .config import MaskConfig
from .data import ArrayDataset, BatchLoader, get_dataset
from .errors import CheckpointError, ConfigError, TrustError, option_error, worded
from .fileformat.constants import DENSE_DTYPES
from .fileformat.container import atomic_write
from .fileformat.reader import read_pemn
from .fileformat.writer import DEFAULT_DENSE_DTYPE, to_bytes
from .inputs import (
    Architecture,
    Source,
    build_input_model,
    check_data_fits,
    one_line,
    read_source,
    short_list,
)
from .surgery import mask_
from .train import Callback, TrainConfig, Trainer, _unwrap, evaluate
from .usercode import build_model, is_reference

__all__ = [
    "CHECKPOINT_FORMAT",
    "CompressOptions",
    "CompressResult",
    "TrainingInterrupted",
    "checkpoint_path",
    "compress",
    "default_output",
    "dense_fp32_bytes",
    "evaluate_file",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pemn-compress-checkpoint/1"
TEST_INTERRUPT_ENV = "PEMN_TEST_INTERRUPT_AFTER_STEPS"
TEST_INTERRUPT_SIGNAL_ENV = "PEMN_TEST_INTERRUPT_SIGNAL"

# Options that do not change the written file; everything else is part of the recipe and must
# match for --resume. (The resolved device type and the world size are added to the recipe.)
NON_RECIPE_FIELDS = ("output", "checkpoint_every", "resume", "threads", "allow_pickle", "device")


# ----------------------------------------------------------------------------------------------
# Options and result


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise option_error(name, f"must be an integer >= {minimum}{' or None' if optional else ''}, found {value!r}")


def _check_number(name: str, value: Any, low: float, high: float | None = None, low_open: bool = True) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}{']' if high is not None else ')'}"
        raise option_error(name, f"must be a number in {bound}, found {value!r}")


def _check_bool(name: str, value: Any, optional: bool = False) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise option_error(name, f"must be True or False{' or None' if optional else ''}, found {value!r}")


@dataclass(frozen=True)
class CompressOptions:
    """Everything ``compress`` needs, validated on construction; plain JSON via ``to_dict``."""

    model: str  # zoo name | state-dict file (.pt/.pth/.bin/.safetensors) | module:function | pickled module
    arch: str | None = None  # architecture of a state dict: zoo name or module:function
    arch_kwargs: dict = field(default_factory=dict)  # keyword arguments of the architecture (JSON values)
    # the mask (MaskConfig)
    strategy: str = "onelayer"  # dense | onelayer | mp | rp
    ratio: float | None = None  # rp only: unique values = int(N_max * ratio) + 1
    rp_mode: str = "rand"  # rp only: rand (tile then permute) | copy (tile in order: aliases with kernel shapes)
    density: float = 0.5  # fraction of each layer's weights the mask keeps
    distribution: str = "normal"  # normal | signed_constant | uniform
    rescale: bool = True  # per-layer fan-in scale (False: the paper's mp/rp)
    learn_values: bool = False  # mp/rp: train the few unique values too
    seed: int = 0  # one seed: values, scores, data order, augmentation
    # the data
    data: str = "fashion-mnist"  # see data.DATASET_SPECS
    data_root: str | None = None  # folder of a named data set (default: its environment variable / package path)
    max_train_samples: int | None = None  # class-stratified training subset, for quick runs
    augment: bool = True  # random crop + horizontal flip of training images
    # training (TrainConfig)
    epochs: int = 10
    batch_size: int = 128  # global batch (split across torchrun ranks)
    lr: float = 0.01
    optimizer: str = "adamw"  # adamw | sgd
    schedule: str = "cosine"  # cosine | onecycle | constant
    weight_decay: float = 5e-5
    label_smoothing: float = 0.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    distill: bool | None = None  # None: on when the input carries trained weights
    distill_alpha: float = 0.5  # weight of the distillation term
    distill_temperature: float = 4.0
    # the output
    dense_dtype: str = DEFAULT_DENSE_DTYPE  # float16 (measured default) | float32 for the dense leftovers
    output: str | None = None  # default: <input stem>.pemn in the current folder
    checkpoint_every: int | None = None  # steps; None: every epoch; 0: only on interruption
    resume: bool = False  # continue <output>.ckpt
    eval_batch_size: int = 500  # batch of the test-set evaluations
    threads: int | None = None  # torch.set_num_threads for the run (restored afterwards)
    allow_pickle: bool = False  # read a pickled nn.Module: runs code from the file

    def __post_init__(self) -> None:
        for name in ("model", "output", "data_root", "data", "arch"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"model must be a zoo name, a file or module:function, found {self.model!r}")
        if not isinstance(self.data, str) or not self.data.strip():
            raise ConfigError(f"data must name a data set, found {self.data!r}")
        for name in ("arch", "data_root", "output"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty string or None, found {value!r}")
        if not isinstance(self.arch_kwargs, dict) or not all(isinstance(k, str) for k in self.arch_kwargs):
            raise ConfigError(f"arch_kwargs must be a dict with string keys, found {self.arch_kwargs!r}")
        try:
            object.__setattr__(self, "arch_kwargs", json.loads(json.dumps(self.arch_kwargs, allow_nan=False)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"arch_kwargs must hold JSON values only: {exc}") from None
        _check_int("seed", self.seed, 0)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        _check_int("max_train_samples", self.max_train_samples, 1, optional=True)
        _check_int("checkpoint_every", self.checkpoint_every, 0, optional=True)
        _check_int("threads", self.threads, 1, optional=True)
        _check_number("lr", self.lr, 0.0)
        _check_number("weight_decay", self.weight_decay, 0.0, low_open=False)
        _check_number("label_smoothing", self.label_smoothing, 0.0, 1.0, low_open=False)
        _check_number("distill_alpha", self.distill_alpha, 0.0, 1.0)
        _check_number("distill_temperature", self.distill_temperature, 0.0)
        for name in ("rescale", "learn_values", "augment", "amp", "resume", "allow_pickle"):
            _check_bool(name, getattr(self, name))
        _check_bool("distill", self.distill, optional=True)
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise option_error("device", f"must be one of auto, cpu, cuda or cuda:N; found {self.device!r}")
        if self.dense_dtype not in DENSE_DTYPES:
            raise option_error("dense_dtype", f"must be one of {', '.join(DENSE_DTYPES)}; found {self.dense_dtype!r}")
        self.mask_config()  # MaskConfig validates density, ratio, strategy, ...
        self.train_config(distill=False)

    def mask_config(self) -> MaskConfig:
        return MaskConfig(
            density=self.density, strategy=self.strategy, ratio=self.ratio, rp_mode=self.rp_mode,
            distribution=self.distribution, rescale=self.rescale, seed=self.seed, learn_values=self.learn_values,
        )  # fmt: skip

    def train_config(self, distill: bool) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, lr=float(self.lr), optimizer=self.optimizer, schedule=self.schedule,
            weight_decay=float(self.weight_decay), label_smoothing=float(self.label_smoothing), amp=self.amp,
            distill_alpha=float(self.distill_alpha) if distill else 0.0,
            distill_temperature=float(self.distill_temperature), seed=self.seed,
        )  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CompressOptions:
        if not isinstance(data, dict):
            raise ConfigError(f"options must be a JSON object, found {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; known options are {sorted(known)}")
        return cls(**data)

    def replace(self, **changes) -> CompressOptions:
        return dataclasses.replace(self, **changes)


@dataclass
class CompressResult:
    """What ``compress`` did; ``to_dict()`` is the CLI's ``--json`` document (``model`` excluded)."""

    output: str | None  # the .pemn written (None on torchrun ranks other than 0)
    input: str  # options.model
    input_kind: str  # zoo | state_dict | safetensors | factory | pickle
    architecture: dict  # the reference written into the file
    dataset: str
    train_samples: int
    test_samples: int
    dense_accuracy: float | None  # test accuracy of the trained input (None: untrained input)
    accuracy: float | None  # test accuracy of the written file, as pemn.load loads it
    file_bytes: int | None  # on-disk size of the .pemn
    dense_fp32_bytes: int | None  # on-disk size of the same model as a dense fp32 safetensors file
    ratio: float | None  # dense_fp32_bytes / file_bytes
    steps: int  # optimizer steps in total (resumed ones included)
    epochs: int
    train_seconds: float  # training time of this run (excludes time before a resume)
    seconds: float  # wall time of this run
    images_per_sec: float  # training throughput of this run (per rank)
    resumed: bool
    distill: bool
    device: str
    world_size: int
    rank: int
    options: dict  # every option as given
    history: list[dict]  # per epoch: epoch, train_loss, train_acc, eval_loss, eval_acc, ...
    warnings: list[str] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # the trained masked model

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "model"}


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); ``checkpoint`` is where its state was saved (or None)."""

    def __init__(self, checkpoint: str | None, step: int | None):
        self.checkpoint = checkpoint
        self.step = step
        where = f"checkpoint saved to {checkpoint} (step {step})" if checkpoint else "no checkpoint was written"
        super().__init__(f"interrupted; {where}")


# ----------------------------------------------------------------------------------------------
# Small helpers


def _input_stem(spec: str) -> str:
    if is_reference(spec) and not Path(spec).exists():
        return spec.rsplit(":", 1)[1].rsplit(".", 1)[-1]
    return Path(spec).stem or "model"


def default_output(model: str) -> Path:
    """``<input stem>.pemn`` in the current folder."""
    return Path(f"{_input_stem(model)}.pemn")


def checkpoint_path(output: str | os.PathLike) -> Path:
    """Where the checkpoint of a run writing ``output`` lives: ``<output>.ckpt``."""
    output = Path(output)
    return output.with_name(output.name + ".ckpt")


def _remove_stale_temp_files(output: Path) -> list[Path]:
    """Remove ``atomic_write``'s temp files of ``output`` and of its checkpoint (``.<output name>.*.tmp``).

    A run killed inside an atomic write (SIGKILL, OOM killer, power loss) cannot clean up after itself;
    the next run on the same output (``--resume`` or a fresh start) does. Returns what it removed.
    """
    folder = output.parent if str(output.parent) else Path(".")
    removed = []
    for path in folder.glob(f".{glob.escape(output.name)}.*.tmp"):
        try:
            path.unlink()
            removed.append(path)
        except OSError:  # gone already, or not ours to remove: leave it
            pass
    return removed


def _check_output(options: CompressOptions) -> Path:
    out = Path(options.output).expanduser() if options.output else default_output(options.model)
    if out.is_dir():
        out = out / default_output(options.model).name
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.exists():
        raise worded(ConfigError, f"output folder {folder} does not exist; create it or choose another --output")
    if not folder.is_dir():
        raise worded(ConfigError, f"output folder {folder} is not a folder; choose another --output")
    problem = None if os.access(folder, os.W_OK | os.X_OK) else "permission denied"
    if problem is None:  # os.access says yes to root everywhere: probe for real
        try:
            import tempfile

            fd, probe = tempfile.mkstemp(prefix=".pemn-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            problem = exc.strerror or str(exc)
    if problem is not None:
        raise worded(ConfigError, f"cannot write to output folder {folder} ({problem}); choose another --output")
    if Path(options.model).is_file() and out.exists() and out.resolve() == Path(options.model).resolve():
        raise worded(ConfigError, f"the output {out} would overwrite the input model; choose another --output")
    return out


class _Reporter:
    """Status lines: to the log, and on stderr through rich when progress is on."""

    def __init__(self, enabled: bool):
        self.console = None
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True, soft_wrap=True)

    def info(self, message: str) -> None:
        logger.info(message)
        if self.console is not None:
            self.console.print(message, style="dim", markup=False, highlight=False)


# ----------------------------------------------------------------------------------------------
# Size of the dense model


def _st_dtype(dtype: torch.dtype) -> tuple[str, int]:
    if dtype.is_floating_point:
        return "F32", 4
    table = {
        torch.bool: ("BOOL", 1), torch.uint8: ("U8", 1), torch.int8: ("I8", 1), torch.int16: ("I16", 2),
        torch.int32: ("I32", 4), torch.int64: ("I64", 8),
    }  # fmt: skip
    return table.get(dtype, ("F32", 4))


_ST_ORDER = ("BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "F64", "I64")


def dense_fp32_bytes(state: dict[str, torch.Tensor]) -> int:
    """Exact on-disk size of ``safetensors.torch.save_file`` of ``state`` with floats as fp32:
    8 bytes + the JSON header padded to 8 + the data (tensors ordered by dtype, then name)."""
    entries = {k: (*_st_dtype(v.dtype), list(v.shape)) for k, v in state.items()}
    rank = {name: i for i, name in enumerate(_ST_ORDER)}
    header, offset = {}, 0
    for name in sorted(entries, key=lambda n: (-rank[entries[n][0]], n)):
        dtype, size, shape = entries[name]
        nbytes = math.prod(shape) * size
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    return 8 + len(text) + (-len(text) % 8) + offset


def _file_sizes(path: Path, deployed: nn.Module) -> tuple[int, int]:
    """(file bytes, dense fp32 bytes): from ``fileformat.summary`` when present."""
    try:
        from .fileformat.summary import summarize
    except ImportError:  # pragma: no cover - the summary module is optional here
        return path.stat().st_size, dense_fp32_bytes(deployed.state_dict())
    totals = summarize(read_pemn(path), path)["totals"]
    return int(totals["file_bytes"]), int(totals["dense_fp32_bytes"])


# ----------------------------------------------------------------------------------------------
# Checkpoints and interruption


def _recipe(options: CompressOptions, distill: bool, device: torch.device, world_size: int, source: Source) -> dict:
    """Every setting that changes the written file (provenance ``recipe``; compared on resume)."""
    recipe = {k: v for k, v in options.to_dict().items() if k not in NON_RECIPE_FIELDS}
    recipe.update(distill=distill, device_type=device.type, world_size=world_size, input_kind=source.kind)
    return recipe


def _read_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, corrupted, not a checkpoint
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(exc)}; delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a pemn compress checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    for key in ("recipe", "trainer", "options"):
        if key not in state:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}; delete it to start over")
    return state


def _compare_checkpoint(path: Path, state: dict, recipe: dict, sha256: str | None) -> None:
    saved = state["recipe"]
    keys = sorted(set(saved) | set(recipe))
    changed = [f"{k} {saved.get(k)!r} -> {recipe.get(k)!r}" for k in keys if saved.get(k) != recipe.get(k)]
    if changed:
        raise CheckpointError(
            f"checkpoint {path} was made with other settings: {short_list(changed, 6)}; "
            "rerun with the original options, or delete the checkpoint to start over"
        )
    if state.get("input_sha256") != sha256:
        raise CheckpointError(f"the input model file changed since checkpoint {path} was written; delete it to start over")


class _Guard(Callback):
    """Periodic checkpoints, and whether the trainer's state is consistent right now.

    The state is consistent from the end of an optimizer step until the next training forward
    starts (a forward pre-hook marks it dirty: BatchNorm statistics change in that forward).
    """

    def __init__(self, save: Callable[[Trainer], None] | None, every: int | None, interrupt_after: int | None,
                 interrupt_signal: bool):
        self.save = save
        self.every = every
        self.interrupt_after = interrupt_after
        self.interrupt_signal = interrupt_signal
        self.dirty = False
        self.saved_step: int | None = None  # step of the checkpoint on disk
        self._handle = None

    def attach(self, module: nn.Module) -> None:
        self._handle = module.register_forward_pre_hook(self._pre_forward)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _pre_forward(self, module: nn.Module, args) -> None:
        if module.training:
            self.dirty = True

    def on_batch_end(self, trainer, batch, loss, correct, size) -> None:
        self.dirty = False
        if self.save is not None and self.every and trainer.step % self.every == 0 and trainer.step < trainer.total_steps:
            self.save(trainer)
        if self.interrupt_after is not None and trainer.step == self.interrupt_after:  # testing hook
            if self.interrupt_signal:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt

    def on_epoch_end(self, trainer, metrics) -> None:
        if self.save is not None and self.every is None and trainer.step < trainer.total_steps:
            self.save(trainer)


class _EpochEval(Callback):
    """Main rank: test accuracy after every epoch but the last (measured on the written file instead)."""

    def __init__(self, loader, device: torch.device, amp: bool):
        self.loader, self.device, self.amp = loader, device, amp

    def on_epoch_end(self, trainer, metrics) -> None:
        if trainer.epoch >= trainer.config.epochs or trainer.step >= trainer.total_steps:
            return
        # the unwrapped module: a DDP forward here would wait for the other ranks
        metrics.eval_loss, metrics.eval_acc = evaluate(_unwrap(trainer.model), self.loader, self.device, self.amp)


class _GracefulInterrupt:
    """First Ctrl-C: stop after the current batch (exact checkpoint). Second: KeyboardInterrupt at once."""

    def __init__(self, trainer: Trainer, report: _Reporter, enabled: bool):
        self.trainer, self.report = trainer, report
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.trainer.stop_requested = True
        self.report.info("interrupt: stopping after this batch (Ctrl-C again to stop at once)")

    def __enter__(self) -> _GracefulInterrupt:
        if self.enabled:
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)


# ----------------------------------------------------------------------------------------------
# The pipeline


def compress(options: CompressOptions, *, progress: bool = False, callbacks: Sequence[Callback] = ()) -> CompressResult:
    """Train a PEMN version of ``options.model`` and write it to ``options.output`` (see the module docstring).

    progress: draw rich progress bars and status lines on stderr (main rank only).
    callbacks: extra ``Trainer`` callbacks (every rank).
    Raises ``PemnError`` subclasses for bad input (before training where possible), and
    ``TrainingInterrupted`` on Ctrl-C.
    """
    if not isinstance(options, CompressOptions):
        raise ConfigError(f"compress() takes CompressOptions, found {type(options).__name__}")
    started = time.perf_counter()
    old_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        device = resolve_device(options.device)
        ctx, device = distributed.init(device)
        try:
            return _run(options, ctx, device, progress, list(callbacks), started)
        finally:
            distributed.teardown(ctx)
    finally:
        if options.threads:
            torch.set_num_threads(old_threads)


def _run(options: CompressOptions, ctx: distributed.DistContext, device: torch.device, progress: bool,
         callbacks: list[Callback], started: float) -> CompressResult:
    report = _Reporter(progress and ctx.is_main)
    warnings: list[str] = []

    # 1. everything that can be checked before training
    output = _check_output(options)
    ckpt_path = checkpoint_path(output)
    if ctx.is_main:
        for stale in _remove_stale_temp_files(output):
            report.info(f"removed {stale.name}, a temporary file left by a run that was killed while writing")
    checkpoint = None
    if options.resume:
        if not ckpt_path.is_file():
            raise worded(CheckpointError, f"--resume: no checkpoint at {ckpt_path} (it is <output>.ckpt; check --output)")
        checkpoint = _read_checkpoint(ckpt_path)
    elif ckpt_path.exists():
        raise worded(
            CheckpointError,
            f"{ckpt_path} holds the checkpoint of an interrupted run; add --resume to continue it, "
            "or delete it to start over",
        )
    source = read_source(options.model, options.arch, options.allow_pickle)
    distill = source.trained if options.distill is None else options.distill
    if distill and not source.trained:
        raise worded(
            ConfigError,
            f"distillation needs a trained input model (a state dict or a pickled module); {options.model} "
            f"is a {'zoo name' if source.kind == 'zoo' else 'module:function factory'}: use --no-distill",
        )
    recipe = _recipe(options, distill, device, ctx.world_size, source)
    if checkpoint is not None:
        _compare_checkpoint(ckpt_path, checkpoint, recipe, source.sha256)
    train_config = options.train_config(distill)
    mask_config = options.mask_config()

    # a zoo model's shape follows the data; any other architecture is checked before loading data
    def input_model(data):
        return build_input_model(source, options.model, options.arch, options.arch_kwargs, options.seed, data)

    arch = input_model(None) if source.kind != "zoo" else None
    data = get_dataset(options.data, options.data_root)
    full_train = data.num_train
    if options.max_train_samples is not None and options.max_train_samples < data.num_train:
        data = data.subset(options.max_train_samples, None, seed=options.seed)
    report.info(
        f"data {options.data}: {data.num_train:,} training images"
        f"{f' (of {full_train:,})' if data.num_train != full_train else ''}, {data.num_test:,} test images "
        f"{data.image_shape}, {data.num_classes} classes"
    )
    arch = arch or input_model(data)
    if arch.reference.get("kind") == "none":
        warnings.append(
            "the file records no architecture: load it with pemn.load(file, model=<your module>) or "
            "pemn eval FILE --arch module:Class (see pemn inspect FILE)"
        )
    check_data_fits(arch.dense, data)
    if options.batch_size % ctx.world_size:
        raise ConfigError(f"batch_size {options.batch_size} must be divisible by the {ctx.world_size} torchrun processes")
    train_loader = BatchLoader.from_dataset(
        data, "train", batch_size=options.batch_size // ctx.world_size, shuffle=True, seed=options.seed,
        crop_padding=data.suggested_crop_padding if options.augment else 0, hflip=options.augment,
        drop_last=True, rank=ctx.rank, world_size=ctx.world_size, device=device,
    )  # fmt: skip
    if len(train_loader) == 0:
        raise worded(
            ConfigError,
            f"--batch-size {options.batch_size} is larger than the {data.num_train} training images"
            f"{f' ({data.num_train // ctx.world_size} per process)' if ctx.enabled else ''}; lower --batch-size",
        )
    test_loader = BatchLoader.from_dataset(data, "test", batch_size=options.eval_batch_size, device=device)

    # 2. the dense input: its accuracy, and the teacher
    dense_accuracy = checkpoint.get("dense_accuracy") if checkpoint is not None else None
    teacher = None
    if source.trained and (ctx.is_main or distill):
        arch.dense.to(device)
        if ctx.is_main and checkpoint is None:
            report.info("evaluating the dense input model ...")
            _, dense_accuracy = evaluate(arch.dense, test_loader, device, amp=False)
            report.info(f"dense model accuracy: {dense_accuracy:.4f}")
        if distill:
            teacher = arch.dense

    # 3. mask a fresh copy and train it
    student = arch.dense if not source.trained else arch.build_fresh()
    mask_(student, mask_config)
    student.train().to(device)
    model = distributed.wrap(student, ctx, device)

    save_ckpt = None
    if ctx.is_main:
        options_dict = options.to_dict()

        def save_ckpt(trainer: Trainer) -> None:
            state = {
                "format": CHECKPOINT_FORMAT,
                "options": options_dict,
                "recipe": recipe,
                "input_sha256": source.sha256,
                "dense_accuracy": dense_accuracy,
                "trainer": trainer.state_dict(),
            }
            buffer = io.BytesIO()
            torch.save(state, buffer)
            atomic_write(ckpt_path, buffer.getvalue())
            guard.saved_step = trainer.step

    interrupt_after = os.environ.get(TEST_INTERRUPT_ENV)
    guard = _Guard(
        save_ckpt,
        options.checkpoint_every,
        int(interrupt_after) if interrupt_after else None,
        os.environ.get(TEST_INTERRUPT_SIGNAL_ENV) == "1",
    )
    if checkpoint is not None:
        guard.saved_step = int(checkpoint["trainer"].get("step", 0))
    guard.attach(student)
    own_callbacks: list[Callback] = [guard]
    bars = None
    if ctx.is_main:
        own_callbacks.insert(0, _EpochEval(test_loader, device, options.amp))
        if progress:
            from .progress import RichProgress

            bars = RichProgress(console=report.console)
            own_callbacks.append(bars)
    trainer = Trainer(model, train_loader, None, train_config, teacher=teacher, callbacks=own_callbacks + callbacks,
                      device=device)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint["trainer"])
        report.info(f"resuming {ckpt_path} at step {trainer.step} of {trainer.total_steps}")
    del checkpoint

    graceful = _GracefulInterrupt(trainer, report, enabled=not ctx.enabled)
    try:
        with graceful:
            fit = trainer.fit()
        if graceful.requested:
            raise KeyboardInterrupt
        distributed.sync_buffers(student, ctx)
        result = None
        if ctx.is_main:
            result = _finish(options, arch, student, data, test_loader, device, output, recipe, dense_accuracy, report)
    except BaseException as exc:
        if bars is not None:
            bars.progress.stop()
        saved = None
        if ctx.is_main and save_ckpt is not None:
            if trainer.step > 0 and not guard.dirty:
                try:
                    save_ckpt(trainer)
                except Exception as save_exc:  # noqa: BLE001 - report the original error, not this one
                    logger.warning("could not write checkpoint %s: %s", ckpt_path, save_exc)
            if ckpt_path.is_file() and guard.saved_step is not None:
                saved = str(ckpt_path)
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, TrainingInterrupted):
            raise TrainingInterrupted(saved, guard.saved_step if saved else None) from None
        if saved is not None:
            try:
                exc.pemn_checkpoint = saved  # the CLI tells the user to --resume
            except AttributeError:  # pragma: no cover - exceptions without __dict__
                pass
        raise
    finally:
        guard.detach()

    if ctx.is_main:
        ckpt_path.unlink(missing_ok=True)
    output_str, accuracy, file_bytes, fp32_bytes = (None, None, None, None)
    if result is not None:
        output_str, accuracy, file_bytes, fp32_bytes = result
        warnings.extend(accuracy_warnings(accuracy, dense_accuracy, data.num_classes))
    return CompressResult(
        output=output_str,
        input=options.model,
        input_kind=source.kind,
        architecture=arch.reference,
        dataset=options.data,
        train_samples=data.num_train,
        test_samples=data.num_test,
        dense_accuracy=dense_accuracy,
        accuracy=accuracy,
        file_bytes=file_bytes,
        dense_fp32_bytes=fp32_bytes,
        ratio=fp32_bytes / file_bytes if file_bytes else None,
        steps=trainer.step,
        epochs=trainer.epoch,
        train_seconds=fit.train_seconds,
        seconds=time.perf_counter() - started,
        images_per_sec=fit.images_per_sec,
        resumed=options.resume,
        distill=distill,
        device=str(device),
        world_size=ctx.world_size,
        rank=ctx.rank,
        options=options.to_dict(),
        history=[asdict(m) for m in trainer.history],
        warnings=warnings,
        model=student,
    )


NEAR_CHANCE_MARGIN = 0.10  # accuracy within 10 points of chance (1 / classes) gets a warning
DENSE_GAP_WARNING = 0.10  # so does accuracy more than 10 points below the dense input's
_USUALLY_HELPS = (
    "what usually helps: more training images (--max-train-samples, or all of them), more --epochs, "
    "--distribution signed_constant, --no-augment for short runs"
)


def accuracy_warnings(accuracy: float | None, dense_accuracy: float | None, num_classes: int) -> list[str]:
    """Warnings for a compressed accuracy near chance, or far below the dense input's."""
    if accuracy is None:
        return []
    chance = 1.0 / max(num_classes, 1)
    if accuracy < chance + NEAR_CHANCE_MARGIN:
        return [f"accuracy {accuracy:.4f} is near chance ({chance:.2f} for {num_classes} classes): the masks learned "
                f"little; {_USUALLY_HELPS}"]
    if dense_accuracy is not None and dense_accuracy - accuracy > DENSE_GAP_WARNING:
        return [f"accuracy {accuracy:.4f} is {100 * (dense_accuracy - accuracy):.1f} points below the dense input's "
                f"{dense_accuracy:.4f}; {_USUALLY_HELPS}, --density 0.3..0.7"]
    return []


def _finish(options, arch: Architecture, student: nn.Module, data: ArrayDataset, test_loader, device, output: Path,
            recipe: dict, dense_accuracy: float | None, report: _Reporter) -> tuple[str, float, int, int]:
    """Encode, load back as pemn.load will, measure the accuracy, write atomically."""
    provenance = {
        "dataset": options.data,
        "dense_accuracy": dense_accuracy,
        "normalization": {"mean": list(data.mean), "std": list(data.std)},
        "evaluation": {"split": "test", "samples": data.num_test, "batch_size": options.eval_batch_size},
        "image_shape": list(data.image_shape),
        "num_classes": data.num_classes,
        "train_samples": data.num_train,
        "recipe": recipe,
    }
    write_options = {"dense_dtype": options.dense_dtype, "architecture": arch.reference}
    report.info("measuring the compressed model as it will be loaded ...")
    blob = to_bytes(student, provenance=provenance, **write_options)
    deployed = load(blob, device=device, model=arch.build_fresh())
    _, accuracy = evaluate(deployed, test_loader, device, amp=False)
    provenance["accuracy"] = accuracy
    save(student, output, provenance=provenance, **write_options)
    file_bytes, fp32_bytes = _file_sizes(output, deployed)
    report.info(f"wrote {output}: {file_bytes:,} bytes, accuracy {accuracy:.4f}")
    return str(output), accuracy, file_bytes, fp32_bytes


# ----------------------------------------------------------------------------------------------
# pemn eval


def build_skeleton(arch: str, arch_kwargs: dict, recorded: dict | None = None) -> nn.Module:
    """The model a user names to load a file into: a zoo name (the file's recorded keyword arguments
    for that name first, then ``arch_kwargs``) or ``module:function`` / ``module:Class``."""
    if is_reference(arch):
        return build_model(arch, arch_kwargs)
    from .models import create_model

    kwargs = {}
    if isinstance(recorded, dict) and recorded.get("kind") == "registry" and recorded.get("name") == arch:
        kwargs = dict(recorded.get("kwargs") or {})
    return create_model(arch, **(kwargs | arch_kwargs))


def evaluate_file(
    path: str | os.PathLike,
    data: str | None = None,
    device: str | torch.device | None = "auto",
    batch_size: int | None = None,
    *,
    data_root: str | os.PathLike | None = None,
    trust_code: bool = False,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
) -> dict:
    """Accuracy of a `.pemn` file over a data set's test split, as ``pemn.load`` loads it.

    ``arch`` (with ``arch_kwargs``) names the architecture to load the file into: a zoo name or a
    ``module:function`` / ``module:Class`` of the caller's code (the caller's own choice: it is run
    without ``trust_code``); needed for files that record no architecture.
    ``data`` defaults to the data set recorded in the file (else fashion-mnist), and then so does
    ``data_root``; a recorded ``module:function`` data hook is followed only with ``trust_code``. Images are normalized with the mean/std recorded at compress time and evaluated
    with the recorded batch size, so the result reproduces the file's recorded accuracy.

    Returns ``{file, dataset, samples, accuracy, loss, recorded_accuracy, dense_accuracy, device,
    batch_size, seconds}``.
    """
    started = time.perf_counter()
    path = Path(path)
    blob = path.read_bytes()
    pf = read_pemn(blob, name=str(path))
    provenance = pf.header.get("provenance") or {}
    recipe = provenance.get("recipe") if isinstance(provenance.get("recipe"), dict) else {}
    recorded = provenance.get("dataset") if isinstance(provenance.get("dataset"), str) else None
    spec = data or recorded or "fashion-mnist"
    if data is None and recorded and is_reference(recorded) and not trust_code:
        # a data hook named by the file would import and run code chosen by whoever wrote the file
        raise worded(
            TrustError,
            f"the file's data set {recorded!r} is a module:function hook, which runs code; "
            "pass the data set explicitly (--data), or --trust-code if you trust the file",
        )
    if data_root is None and data is None:
        root = recipe.get("data_root")
        data_root = root if isinstance(root, str) else None
    dataset = get_dataset(spec, data_root)
    target = resolve_device(device)
    skeleton = build_skeleton(arch, arch_kwargs or {}, pf.header.get("architecture")) if arch else None
    model = load(blob, device=target, trust_code=trust_code, model=skeleton)
    check_data_fits(model, dataset, target)
    norm = provenance.get("normalization") if isinstance(provenance.get("normalization"), dict) else {}
    mean, std = norm.get("mean"), norm.get("std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == dataset.in_chans):
        mean, std = dataset.mean, dataset.std
    recorded_batch = (provenance.get("evaluation") or {}).get("batch_size") if isinstance(provenance.get("evaluation"), dict) else None
    batch = batch_size or (recorded_batch if isinstance(recorded_batch, int) and recorded_batch > 0 else 500)
    loader = BatchLoader.from_dataset(dataset, "test", batch_size=batch, mean=mean, std=std, device=target)
    loss, accuracy = evaluate(model, loader, target, amp=False)
    return {
        "file": str(path),
        "dataset": spec,
        "samples": dataset.num_test,
        "accuracy": accuracy,
        "loss": loss,
        "recorded_accuracy": provenance.get("accuracy"),
        "dense_accuracy": provenance.get("dense_accuracy"),
        "device": str(target),
        "batch_size": batch,
        "seconds": time.perf_counter() - started,
    }
