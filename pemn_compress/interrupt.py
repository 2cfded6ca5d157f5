"""How a ``pemn compress`` run stops early: Ctrl-C handling and the exceptions that say where to resume.

The first Ctrl-C (SIGINT) lets the current batch finish, so the checkpoint written next is exact; a
second one stops at once. Either way ``compress`` raises ``TrainingInterrupted`` (a
``KeyboardInterrupt``); an error once training has started raises ``TrainingFailed`` wrapping it.
Both carry the checkpoint to ``--resume`` from (None when there is none) and its step.

This module does not import torch: the command line catches these exceptions without paying for it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Protocol

__all__ = ["GracefulInterrupt", "TrainingFailed", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); ``checkpoint`` is where its state was saved (or None)."""

    def __init__(self, checkpoint: str | None, step: int | None):
        self.checkpoint = checkpoint
        self.step = step
        where = f"checkpoint saved to {checkpoint} (step {step})" if checkpoint else "no checkpoint was written"
        super().__init__(f"interrupted; {where}")


class TrainingFailed(Exception):
    """Training (or writing its result) failed with ``error`` (also the ``__cause__``).

    ``checkpoint`` is where the run's progress was saved, to continue with ``--resume`` once the
    cause is fixed (None: nothing to resume from); ``step`` is its optimizer step.
    """

    def __init__(self, error: Exception, checkpoint: str | None, step: int | None):
        self.error = error
        self.checkpoint = checkpoint
        self.step = step
        where = f"; checkpoint saved to {checkpoint} (step {step})" if checkpoint else ""
        super().__init__(f"{type(error).__name__}: {error}{where}")


class _Stoppable(Protocol):
    stop_requested: bool


class _Status(Protocol):
    def info(self, message: str) -> None: ...


class GracefulInterrupt:
    """A context in which the first Ctrl-C asks ``trainer`` to stop after the current batch
    (``requested`` becomes True) and a second one raises ``KeyboardInterrupt`` at once.

    Only in the main thread (Python delivers signals there) and only when ``enabled`` (the caller
    disables it under torchrun: a rank that finished its batch and stopped alone would leave the
    others waiting in a collective). The previous SIGINT handler is restored on exit.
    """

    def __init__(self, trainer: _Stoppable, status: _Status, *, enabled: bool):
        self.trainer, self.status = trainer, status
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.trainer.stop_requested = True
        self.status.info("interrupt: stopping after this batch (Ctrl-C again to stop at once)")

    def __enter__(self) -> GracefulInterrupt:
        if self.enabled:
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
