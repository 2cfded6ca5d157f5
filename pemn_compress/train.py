"""The mask trainer: a small loop with callbacks, checkpoints, schedules and distillation.

``Trainer(model, train_loader, eval_loader, TrainConfig(...)).fit()`` trains whatever in ``model``
requires a gradient (for a masked model: the scores and the dense leftovers such as BatchNorm), with
AdamW or SGD, linear warm-up + cosine or one-cycle schedules, label smoothing, AMP on CUDA and an
optional dense teacher for distillation (KL on temperature-softened logits). It evaluates after
every epoch, can keep the best state, reports through callbacks (the CLI hangs its progress bars
there) and can save/restore its complete state so a resumed run ends exactly like an uninterrupted
one with the same seed.

Loaders are iterables of ``(x, y)`` batches with ``len()``; when they have ``set_epoch(epoch)`` it is
called before every epoch, so the batch order is a function of (seed, epoch) and resuming mid-run
reproduces it. A loader with ``batches_from(k)`` (``data.BatchLoader``, the pipeline's torch loaders)
resumes mid-epoch without reading the ``k`` batches already trained on; others are iterated past them.

The objective is a ``tasks.Task``: classification (cross-entropy, accuracy) unless the caller gives
its own loss and metric. Distillation is on exactly when a ``teacher`` is given (classification).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .defaults import OPTIMIZERS, SCHEDULES, default
from .errors import CheckpointError, ConfigError, DataError, check_bool, check_choice, check_int, check_number
from .tasks import CLASSIFICATION, Task, make_task

__all__ = ["Callback", "EpochMetrics", "TrainConfig", "TrainResult", "Trainer", "evaluate"]

TEACHER_CACHE_BYTES = 1 << 30  # the most memory cached teacher logits may take


@dataclass(frozen=True)
class TrainConfig:
    # the defaults shared with pemn compress are declared in defaults.py (with the evidence for each)
    epochs: int = default("epochs")  # full passes over the training loader
    lr: float = default("lr")  # peak learning rate (scores like a large one: they only need to reorder)
    optimizer: str = default("optimizer")  # adamw | sgd (momentum 0.9, nesterov)
    weight_decay: float = default("weight_decay")  # applied to scores and dense weights; never to norms, biases
    momentum: float = 0.9  # sgd only
    schedule: str = default("schedule")  # cosine (linear warm-up then cosine to 0) | onecycle | constant
    warmup_epochs: float = 0.5  # cosine only: warm-up length, fractions of an epoch allowed
    label_smoothing: float = default("label_smoothing")  # cross-entropy label smoothing
    amp: bool = default("amp")  # bfloat16 autocast when training on CUDA; ignored on CPU
    grad_clip: float | None = None  # max global grad norm, None = off
    distill_alpha: float = default("distill_alpha")  # weight of the distillation term when a teacher is given
    # (0: the teacher is ignored, 1: teacher only)
    distill_temperature: float = default("distill_temperature")  # softmax temperature of teacher and student
    cache_teacher: bool = True  # distillation from a loader that does not augment: the teacher's logits of
    # every training sample computed once, then looked up (the same logits, no teacher pass per step)
    keep_best: bool = False  # restore the state with the best eval accuracy at the end (optimistic!)
    max_steps: int | None = None  # stop after this many optimizer steps (quick runs, tests)
    seed: int = default("seed")  # seeds torch's global RNG for the run (dropout, ...); loaders carry their own seed

    def __post_init__(self) -> None:
        """Every field checked for type and range; a bad one is a ``ConfigError`` naming the field and value."""
        check_int("epochs", self.epochs, minimum=1)
        check_number("lr", self.lr, low=0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_number("weight_decay", self.weight_decay, low=0, low_open=False)
        check_number("momentum", self.momentum, low=0, low_open=False)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_number("warmup_epochs", self.warmup_epochs, low=0, low_open=False)
        check_number("label_smoothing", self.label_smoothing, low=0, high=1, low_open=False, high_open=True)
        check_bool("amp", self.amp)
        check_number("grad_clip", self.grad_clip, low=0, optional=True)
        check_number("distill_alpha", self.distill_alpha, low=0, high=1, low_open=False)
        check_number("distill_temperature", self.distill_temperature, low=0)
        check_bool("keep_best", self.keep_best)
        check_bool("cache_teacher", self.cache_teacher)
        check_int("max_steps", self.max_steps, minimum=1, optional=True)
        check_int("seed", self.seed, minimum=0)


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float | None  # classification only
    eval_loss: float | None
    eval_acc: float | None  # the task's metric on the eval loader (accuracy for classification)
    images_per_sec: float  # training images per second of this epoch (eval excluded)
    seconds: float


@dataclass
class TrainResult:
    final_acc: float | None  # eval accuracy of the returned state
    best_acc: float | None
    best_epoch: int | None
    history: list[EpochMetrics] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0

    @property
    def images_per_sec(self) -> float:
        images = sum(m.images_per_sec * m.seconds for m in self.history)
        seconds = sum(m.seconds for m in self.history)
        return images / seconds if seconds else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"images_per_sec": self.images_per_sec}


class Callback:
    """Hooks called by ``Trainer.fit``; override what you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float, correct: int, size: int) -> None: ...

    def on_eval_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None: ...

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None: ...


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _batch_size(y: Any) -> int:
    return int(y.shape[0]) if isinstance(y, torch.Tensor) and y.ndim else 1


def _to_device(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device=None, amp: bool = False, *, task: Task | None = None,
             loss: Any = None, metric: Any = None) -> tuple[float, float]:
    """``(mean loss, metric)`` of ``model`` over ``loader``, in eval mode.

    Args:
        model: the network; put in eval mode for the pass, then back in its previous mode.
        loader: an iterable of ``(input, target)`` batches (a ``DataLoader``, a ``BatchLoader``).
        device: where to run (default: the model's).
        amp: bfloat16 autocast on CUDA.
        task: the objective (default: classification, i.e. cross-entropy and accuracy); a custom task's
            loss and metric are averaged over samples, each batch weighted by its size.
        loss, metric: the objective as ``pemn.compress`` takes it (``loss(output, target)``, a ``pemn.Metric``
            or ``(name, fn[, higher_is_better])``), instead of ``task``.

    Returns:
        ``(loss, metric)``: for classification ``(mean cross-entropy, accuracy)``.
    """
    if loss is not None or metric is not None:
        if task is not None:
            raise ConfigError("give task= or loss=/metric=, not both")
        task = make_task(loss, metric)
    task = task or CLASSIFICATION
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss, total_metric, count = 0.0, 0.0, 0
    for x, y in loader:
        x, y = _to_device(x, device), _to_device(y, device)
        with _autocast(device, amp):
            out = model(x)
        n = _batch_size(y)
        if task.classification:
            total_loss += F.cross_entropy(out.float(), y, reduction="sum").item()
            total_metric += (out.argmax(dim=1) == y).sum().item()
        else:
            assert task.loss is not None and task.metric is not None and task.metric.fn is not None
            total_loss += float(task.loss(out.float(), y)) * n
            total_metric += float(task.metric.fn(out.float(), y)) * n
        count += n
    model.train(was_training)
    if count == 0:
        raise DataError("evaluation loader yielded no sample")
    return total_loss / count, total_metric / count


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        train_loader,
        eval_loader=None,
        config: TrainConfig | None = None,
        *,
        teacher: nn.Module | None = None,
        callbacks: Sequence[Callback] = (),
        device=None,
        task: Task | None = None,
    ):
        self.config = config or TrainConfig()
        self.task = task or CLASSIFICATION
        self.model = model
        self.train_loader = train_loader
        self.eval_loader = eval_loader
        self.teacher = teacher
        self.callbacks = list(callbacks)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if teacher is not None and not self.task.classification:
            raise ConfigError("distillation from a teacher compares class logits: a custom loss trains without one")
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self._teacher_logits: torch.Tensor | None = None  # (samples, classes) when cached, see _cache_teacher
        self._batch_indices: torch.Tensor | None = None  # the samples of the current epoch, in order
        self.steps_per_epoch = len(train_loader)
        if self.steps_per_epoch == 0:
            raise DataError("the training loader yields no batch (too few samples for the batch size?)")
        self.total_steps = self.config.epochs * self.steps_per_epoch
        if self.config.max_steps is not None:
            self.total_steps = min(self.total_steps, self.config.max_steps)
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.history: list[EpochMetrics] = []
        self.best_acc: float | None = None
        self.best_epoch: int | None = None
        self._best_state: dict | None = None
        self.stop_requested = False  # a callback may set it to end fit() after the current batch

    # ------------------------------------------------------------------ setup
    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for p in _unwrap(self.model).parameters():
            if not p.requires_grad:
                continue
            if p.ndim <= 1:  # learned values, norms, biases
                no_decay.append(p)
            else:
                decay.append(p)
        if not decay and not no_decay:
            raise ConfigError("the model has no trainable parameter")
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        cfg = self.config
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=cfg.lr)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)

    def _make_scheduler(self):
        cfg, total = self.config, self.total_steps
        if cfg.schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=cfg.lr, total_steps=total)
        if cfg.schedule == "constant":
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        warmup = min(int(cfg.warmup_epochs * self.steps_per_epoch), total - 1)

        def cosine(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine)

    # ------------------------------------------------------------------ loop
    def teacher_cacheable(self) -> bool:
        """Whether the teacher's logits are computed once: distillation on, ``cache_teacher``, and a
        ``BatchLoader`` that yields every sample the same way every epoch (no crop, no flip) whose logits
        fit in ``TEACHER_CACHE_BYTES`` (checked on the first batch)."""
        loader, cfg = self.train_loader, self.config
        if not self.distilling or not cfg.cache_teacher or not hasattr(loader, "unaugmented"):
            return False
        return getattr(loader, "crop_padding", 1) == 0 and not getattr(loader, "hflip", True)

    @property
    def distilling(self) -> bool:
        """Whether the loss has a distillation term: a teacher and a positive ``distill_alpha``."""
        return self.teacher is not None and self.config.distill_alpha > 0

    @torch.no_grad()
    def _cache_teacher(self) -> None:
        """The teacher's logits of every training sample, in dataset order, in batches of the training
        batch size (the same arithmetic as the per-step pass it replaces)."""
        assert self.teacher is not None
        loader = self.train_loader
        ordered = loader.unaugmented(loader.batch_size)
        parts: list[torch.Tensor] = []
        for x, _ in ordered:
            with _autocast(self.device, self.config.amp):
                parts.append(self.teacher(x.to(self.device)).float())
            if len(parts) == 1 and parts[0][0].numel() * 4 * loader.dataset_size > TEACHER_CACHE_BYTES:
                return  # too many classes x samples: the teacher runs every step instead
        self._teacher_logits = torch.cat(parts)

    def _teacher_batch(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        if self._teacher_logits is not None and self._batch_indices is not None:
            size = self.train_loader.batch_size
            index = self._batch_indices[batch * size : (batch + 1) * size].to(self._teacher_logits.device)
            return self._teacher_logits.index_select(0, index)
        assert self.teacher is not None  # only called when distilling
        with torch.no_grad(), _autocast(self.device, self.config.amp):
            return self.teacher(x).float()

    def _loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, batch: int = 0) -> torch.Tensor:
        cfg = self.config
        if not self.task.classification:
            assert self.task.loss is not None
            return self.task.loss(logits.float(), y)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        if self.distilling:
            teacher_logits = self._teacher_batch(x, batch)
            t = cfg.distill_temperature
            kl = F.kl_div(
                F.log_softmax(logits.float() / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                reduction="batchmean", log_target=True,
            )
            loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * t * t * kl
        return loss

    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def fit(self) -> TrainResult:
        cfg = self.config
        if self.step == 0:
            torch.manual_seed(cfg.seed)
        self.model.to(self.device)
        if self._teacher_logits is None and self.teacher_cacheable():
            self._cache_teacher()
        self._emit("on_fit_start")
        started = time.perf_counter()
        while self.epoch < cfg.epochs and self.step < self.total_steps and not self.stop_requested:
            metrics = self._train_epoch(self.epoch)
            if metrics is None:  # stopped mid-epoch
                break
            self.history.append(metrics)
            self.epoch += 1
            self._emit("on_epoch_end", metrics)
        final_acc = self.history[-1].eval_acc if self.history else None
        if cfg.keep_best and self._best_state is not None:
            _unwrap(self.model).load_state_dict(self._best_state)
            final_acc = self.best_acc
        result = TrainResult(final_acc, self.best_acc, self.best_epoch, list(self.history), self.step,
                             time.perf_counter() - started)
        self._emit("on_fit_end", result)
        return result

    def _train_epoch(self, epoch: int) -> EpochMetrics | None:
        cfg = self.config
        for loader in (self.train_loader, self.eval_loader):
            if loader is not None and hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
        done_in_epoch = self.step - epoch * self.steps_per_epoch  # > 0 when resuming mid-epoch
        if self._teacher_logits is not None:
            self._batch_indices = self.train_loader.indices(epoch)
        self._emit("on_epoch_start", epoch)
        self.model.train()
        loss_sum, correct, seen, timed_images = 0.0, 0, 0, 0
        t0 = time.perf_counter()
        for batch, (x, y) in self._epoch_batches(done_in_epoch):
            if self.step >= self.total_steps or self.stop_requested:
                break
            x, y = _to_device(x, self.device), _to_device(y, self.device)
            with _autocast(self.device, cfg.amp):
                logits = self.model(x)
            loss = self._loss(x, y, logits, batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            size = _batch_size(y)
            batch_correct = (logits.detach().argmax(dim=1) == y).sum().item() if self.task.classification else 0
            loss_value = loss.item()
            loss_sum += loss_value * size
            correct += batch_correct
            seen += size
            timed_images += size
            self._emit("on_batch_end", batch, loss_value, batch_correct, size)
        seconds = time.perf_counter() - t0
        epoch_finished = self.step >= (epoch + 1) * self.steps_per_epoch or self.step >= self.total_steps
        if not epoch_finished:
            return None
        eval_loss = eval_acc = None
        if self.eval_loader is not None:
            self._emit("on_eval_start", epoch)
            eval_loss, eval_acc = evaluate(self.model, self.eval_loader, self.device, cfg.amp, task=self.task)
            better = self.best_acc is None or (
                eval_acc > self.best_acc if self.task.higher_is_better else eval_acc < self.best_acc)
            if better:
                self.best_acc, self.best_epoch = eval_acc, epoch
                if cfg.keep_best:
                    self._best_state = copy.deepcopy(_unwrap(self.model).state_dict())
        return EpochMetrics(
            epoch=epoch,
            train_loss=loss_sum / max(1, seen),
            train_acc=correct / max(1, seen) if self.task.classification else None,
            eval_loss=eval_loss,
            eval_acc=eval_acc,
            images_per_sec=timed_images / seconds if seconds > 0 else 0.0,
            seconds=seconds,
        )

    def _epoch_batches(self, skip: int) -> Iterator[tuple[int, Any]]:
        """``(index, batch)`` of the current epoch from batch ``skip`` on (a resumed run skips what it trained)."""
        loader = self.train_loader
        if skip and hasattr(loader, "batches_from"):
            yield from enumerate(loader.batches_from(skip), start=skip)
            return
        for batch, item in enumerate(loader):
            if batch >= skip:
                yield batch, item

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly where the run is (tensors and plain values only)."""
        return {
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": [asdict(m) for m in self.history],
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "best_state": self._best_state,
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            if state["config"] != asdict(self.config):
                changed = sorted(k for k in state["config"] if state["config"][k] != asdict(self.config).get(k))
                raise CheckpointError(f"checkpoint was made with other training settings: {', '.join(changed)}")
            _unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.history = [EpochMetrics(**m) for m in state["history"]]
            self.best_acc, self.best_epoch = state["best_acc"], state["best_epoch"]
            self._best_state = state["best_state"]
            torch.set_rng_state(state["torch_rng"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint cannot be resumed: {exc}") from exc
