"""Density annealing: masks that start near dense and reach their density by the end of training.

Issue 13 asks whether starting with most weights kept and removing the lowest-score ones gradually
(as gradual magnitude pruning does for trained weights; Zhu and Gupta 2017) trains better masks than
the fixed density edge-popup uses. ``DensityAnnealing`` is that schedule as a trainer callback, and
``pemn compress --density-schedule anneal`` (``CompressOptions.density_schedule``) puts it first among
the run's callbacks. It is measured by ``benchmarks/frontier.py`` (all of Fashion-MNIST, 10 epochs,
paired over 3 seeds against the same options without it: its "density annealing" rows).

    compress(options, callbacks=[DensityAnnealing()])   # from density 1.0, cubic, done at 75% of steps

At step ``s`` of ``S`` the density is ``d + (start - d) * (1 - min(1, s / (end * S)))**3`` with ``d``
the model's own density: the same function of the step on every rank and after ``--resume``, and
exactly ``d`` from ``end * S`` steps on, so the file is written at the density it was asked for. Each
change keeps the largest ``|scores|`` of every layer (``surgery.set_model_density_``; across layers when the
model carries an allocator, ``surgery.ALLOCATOR``), so the kept weights of a lower density are a subset of
those of a higher one.
"""

from __future__ import annotations

from .errors import check_number
from .surgery import config_of, set_model_density_
from .train import Callback, Trainer, TrainResult, _unwrap

__all__ = ["DensityAnnealing"]


class DensityAnnealing(Callback):
    """Anneal the masked model's density from ``start`` to its own over the first ``end`` of the steps."""

    def __init__(self, start: float = 1.0, end: float = 0.75):
        check_number("start", start, low=0.0, high=1.0)
        check_number("end", end, low=0.0, high=1.0)
        self.start, self.end = float(start), float(end)
        self.target: float | None = None

    def density_at(self, step: int, total: int) -> float:
        """The density after ``step`` of ``total`` optimizer steps (the target once ``end`` is reached)."""
        assert self.target is not None, "on_fit_start sets the target"
        progress = min(1.0, step / max(1.0, self.end * total))
        if progress >= 1.0 or self.start <= self.target:
            return self.target
        return self.target + (self.start - self.target) * (1.0 - progress) ** 3

    def _apply(self, trainer: Trainer) -> None:
        set_model_density_(_unwrap(trainer.model), self.density_at(trainer.step, trainer.total_steps))

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.target is None:  # the density the model was masked at: what the file must have
            self.target = config_of(_unwrap(trainer.model)).density
        self._apply(trainer)

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float, correct: int, size: int) -> None:
        self._apply(trainer)

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        assert self.target is not None
        set_model_density_(_unwrap(trainer.model), self.target)  # a run stopped early still ends at its density
