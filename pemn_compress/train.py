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
reproduces it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, ConfigError, DataError, check_bool, check_choice, check_int, check_number

__all__ = ["Callback", "EpochMetrics", "TrainConfig", "TrainResult", "Trainer", "evaluate"]

OPTIMIZERS = ("adamw", "sgd")
TEACHER_CACHE_BYTES = 1 << 30  # the most memory cached teacher logits may take
SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # full passes over the training loader
    lr: float = 0.01  # peak learning rate (scores like a large one: they only need to reorder)
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9, nesterov)
    weight_decay: float = 5e-4  # applied to scores and dense weights; never to norms, biases, values
    # (5e-4 beat 5e-5 on every seed of benchmarks/results/recipe_*)
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine (linear warm-up then cosine to 0) | onecycle | constant
    warmup_epochs: float = 0.5  # cosine only: warm-up length, fractions of an epoch allowed
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    amp: bool = True  # bfloat16 autocast when training on CUDA; ignored on CPU
    grad_clip: float | None = None  # max global grad norm, None = off
    distill_alpha: float = 0.0  # weight of the distillation term (0 = off, 1 = teacher only)
    distill_temperature: float = 4.0  # softmax temperature of teacher and student logits
    cache_teacher: bool = True  # distillation from a loader that does not augment: the teacher's logits of
    # every training sample computed once, then looked up (the same logits, no teacher pass per step)
    keep_best: bool = False  # restore the state with the best eval accuracy at the end (optimistic!)
    max_steps: int | None = None  # stop after this many optimizer steps (quick runs, tests)
    seed: int = 0  # seeds torch's global RNG for the run (dropout, ...); loaders carry their own seed

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
    train_acc: float
    eval_loss: float | None
    eval_acc: float | None
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


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device=None, amp: bool = False) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` over ``loader``, in eval mode."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
        total_loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        count += y.numel()
    model.train(was_training)
    if count == 0:
        raise DataError("evaluation loader yielded no sample")
    return total_loss / count, correct / count


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
    ):
        self.config = config or TrainConfig()
        self.model = model
        self.train_loader = train_loader
        self.eval_loader = eval_loader
        self.teacher = teacher
        self.callbacks = list(callbacks)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if self.config.distill_alpha > 0 and teacher is None:
            raise ConfigError("distill_alpha > 0 needs a teacher model")
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
        if cfg.distill_alpha <= 0 or not cfg.cache_teacher or not hasattr(loader, "unaugmented"):
            return False
        return getattr(loader, "crop_padding", 1) == 0 and not getattr(loader, "hflip", True)

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
        assert self.teacher is not None  # __init__ refuses distill_alpha > 0 without a teacher
        with torch.no_grad(), _autocast(self.device, self.config.amp):
            return self.teacher(x).float()

    def _loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, batch: int = 0) -> torch.Tensor:
        cfg = self.config
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        if cfg.distill_alpha > 0:
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
        for batch, (x, y) in enumerate(self.train_loader):
            if batch < done_in_epoch:
                continue
            if self.step >= self.total_steps or self.stop_requested:
                break
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
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
            batch_correct = (logits.detach().argmax(dim=1) == y).sum().item()
            loss_value = loss.item()
            loss_sum += loss_value * y.numel()
            correct += batch_correct
            seen += y.numel()
            timed_images += y.numel()
            self._emit("on_batch_end", batch, loss_value, batch_correct, y.numel())
        seconds = time.perf_counter() - t0
        epoch_finished = self.step >= (epoch + 1) * self.steps_per_epoch or self.step >= self.total_steps
        if not epoch_finished:
            return None
        eval_loss = eval_acc = None
        if self.eval_loader is not None:
            self._emit("on_eval_start", epoch)
            eval_loss, eval_acc = evaluate(self.model, self.eval_loader, self.device, cfg.amp)
            if self.best_acc is None or eval_acc > self.best_acc:
                self.best_acc, self.best_epoch = eval_acc, epoch
                if cfg.keep_best:
                    self._best_state = copy.deepcopy(_unwrap(self.model).state_dict())
        return EpochMetrics(
            epoch=epoch,
            train_loss=loss_sum / max(1, seen),
            train_acc=correct / max(1, seen),
            eval_loss=eval_loss,
            eval_acc=eval_acc,
            images_per_sec=timed_images / seconds if seconds > 0 else 0.0,
            seconds=seconds,
        )

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
