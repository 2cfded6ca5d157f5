"""Rich progress display for training, as a ``Trainer`` callback (drawn on stderr)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .train import Callback, EpochMetrics

__all__ = ["RichProgress"]


class RichProgress(Callback):
    """An overall epoch bar and a batch bar with loss, accuracy and images per second."""

    def __init__(self, console: Console | None = None, transient: bool = False):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=transient,
        )

    def on_fit_start(self, trainer) -> None:
        self.progress.start()
        self.epochs = self.progress.add_task("epochs", total=trainer.config.epochs, completed=trainer.epoch, info="")
        self.batches = self.progress.add_task("batches", total=trainer.steps_per_epoch, info="")

    def on_epoch_start(self, trainer, epoch: int) -> None:
        done = trainer.step - epoch * trainer.steps_per_epoch
        self.progress.reset(self.batches, total=trainer.steps_per_epoch, completed=max(0, done),
                            description=f"epoch {epoch + 1}", info="")
        self._loss = 0.0
        self._correct = self._seen = 0
        self._t0 = time.perf_counter()

    def on_batch_end(self, trainer, batch: int, loss: float, correct: int, size: int) -> None:
        self._loss += loss * size
        self._correct += correct
        self._seen += size
        rate = self._seen / max(1e-9, time.perf_counter() - self._t0)
        acc = f"  acc {self._correct / self._seen:.3f}" if trainer.task.classification else ""
        info = f"loss {self._loss / self._seen:.3f}{acc}  {rate:,.0f} img/s"
        self.progress.update(self.batches, advance=1, info=info)

    def on_eval_start(self, trainer, epoch: int) -> None:
        self.progress.update(self.batches, description="evaluating")

    def on_epoch_end(self, trainer, metrics: EpochMetrics) -> None:
        name = "acc" if trainer.task.classification else trainer.task.metric_name
        train = f"train acc {metrics.train_acc:.4f}" if metrics.train_acc is not None else f"train loss " \
            f"{metrics.train_loss:.4f}"
        evaluated = "" if metrics.eval_acc is None else f"  eval {name} {metrics.eval_acc:.4f}"
        self.progress.update(self.epochs, advance=1, info=f"{train}{evaluated}")

    def on_fit_end(self, trainer, result) -> None:
        self.progress.stop()
