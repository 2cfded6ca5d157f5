"""Fault injection for tests: trainer callbacks that stop a ``compress`` run the way a user or the
machine would, at a chosen optimizer step, so interruption and ``--resume`` can be checked deterministically.

    compress(options, callbacks=[InterruptAfterSteps(5)])               # as a crash or a second Ctrl-C
    compress(options, callbacks=[InterruptAfterSteps(3, signal=True)])  # a real first Ctrl-C (SIGINT)
"""

from __future__ import annotations

import os
import signal as signals

from pemn_compress.errors import check_int
from pemn_compress.train import Callback

__all__ = ["InterruptAfterSteps"]


class InterruptAfterSteps(Callback):
    """Interrupt training right after optimizer step ``step``.

    ``signal=False`` raises ``KeyboardInterrupt`` from the callback, as a crash or a second Ctrl-C
    would: the state is consistent (the step is complete), so the checkpoint is written at ``step``.
    ``signal=True`` sends SIGINT to this process instead, as a first Ctrl-C: ``compress``'s handler
    lets training stop after the batch and the checkpoint is written at ``step`` too.

    ``compress`` runs the callbacks it is given after its own, so a periodic checkpoint due at the
    same step is written first, as it would be without the interruption.
    """

    def __init__(self, step: int, *, signal: bool = False):
        check_int("step", step, minimum=1)
        self.step = step
        self.signal = signal

    def on_batch_end(self, trainer, batch, loss, correct, size) -> None:
        if trainer.step != self.step:
            return
        if self.signal:
            os.kill(os.getpid(), signals.SIGINT)
        else:
            raise KeyboardInterrupt
