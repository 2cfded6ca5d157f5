"""Checkpoints of ``pemn compress``: where they live, reading and comparing them, writing them.

A checkpoint is ``<output>.ckpt``: a ``torch.save`` of plain tensors, dicts, lists, numbers and
strings (read back with ``torch.load(weights_only=True)``, so loading one runs no code), written
atomically by the main rank. It holds the trainer's complete state, the options, the recipe and the
input file's SHA-256; ``--resume`` refuses one made with another recipe or another input.

``CheckpointGuard`` (a trainer callback) writes them periodically and knows whether the trainer's
state is consistent right now; ``save_on_failure`` uses it to leave an exact checkpoint behind
when a run stops on Ctrl-C or an error.

A run killed inside an atomic write (SIGKILL, OOM killer, power loss) leaves a
``.<output name>.*.tmp`` file; ``remove_stale_temp_files`` lets the next run on that output remove it.
"""

from __future__ import annotations

import glob
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .errors import CheckpointError, worded
from .fileformat.container import atomic_write
from .inputs import one_line, short_list
from .train import Callback, Trainer

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointGuard",
    "checkpoint_path",
    "compare_checkpoint",
    "existing_checkpoint",
    "read_checkpoint",
    "remove_stale_temp_files",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pemn-compress-checkpoint/1"
_REQUIRED_KEYS = ("recipe", "trainer", "options")


def checkpoint_path(output: str | os.PathLike) -> Path:
    """Where the checkpoint of a run writing ``output`` lives: ``<output>.ckpt``."""
    output = Path(output)
    return output.with_name(output.name + ".ckpt")


def remove_stale_temp_files(output: Path) -> list[Path]:
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


def read_checkpoint(path: Path) -> dict:
    """The checkpoint at ``path``, checked to be one (``CheckpointError`` otherwise); runs no code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, corrupted, not a checkpoint
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(exc)}; delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a pemn compress checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    for key in _REQUIRED_KEYS:
        if key not in state:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}; delete it to start over")
    return state


def existing_checkpoint(path: Path, *, resume: bool) -> dict | None:
    """The checkpoint to continue (``resume``), or None for a fresh run.

    ``--resume`` needs one; a fresh run never overwrites one silently (it holds an interrupted run).
    """
    if resume:
        if not path.is_file():
            raise worded(CheckpointError, f"--resume: no checkpoint at {path} (it is <output>.ckpt; check --output)")
        return read_checkpoint(path)
    if path.exists():
        raise worded(
            CheckpointError,
            f"{path} holds the checkpoint of an interrupted run; add --resume to continue it, "
            "or delete it to start over",
        )
    return None


def compare_checkpoint(path: Path, state: dict, recipe: dict, sha256: str | None, *,
                       absent: dict | None = None) -> None:
    """``CheckpointError`` unless ``state`` was made with ``recipe`` from the same input file; ``absent``:
    the values of settings that a checkpoint written before they existed does not record."""
    saved = {**(absent or {}), **state["recipe"]}
    keys = sorted(set(saved) | set(recipe))
    changed = [f"{k} {saved.get(k)!r} -> {recipe.get(k)!r}" for k in keys if saved.get(k) != recipe.get(k)]
    if changed:
        raise CheckpointError(
            f"checkpoint {path} was made with other settings: {short_list(changed, 6)}; "
            "rerun with the original options, or delete the checkpoint to start over"
        )
    if state.get("input_sha256") != sha256:
        raise CheckpointError(
            f"the input model file changed since checkpoint {path} was written; delete it to start over"
        )


def write_checkpoint(path: Path, trainer: Trainer, *, options: dict, recipe: dict, input_sha256: str | None,
                     dense_accuracy: float | None, threads: int | None = None) -> None:
    """Write the trainer's state and what ``--resume`` checks, atomically (the old one stays until then);
    ``threads``: the torch threads the run chose (a resumed run keeps them: float sums depend on them)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "options": options,
        "recipe": recipe,
        "input_sha256": input_sha256,
        "dense_accuracy": dense_accuracy,
        "threads": threads,
        "trainer": trainer.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


class CheckpointGuard(Callback):
    """Periodic checkpoints, and whether the trainer's state is consistent right now.

    ``save`` (None on ranks that write nothing) writes a checkpoint of the trainer. With ``every``
    steps it runs after every ``every``-th optimizer step, with None after every epoch, with 0 never
    (only ``save_on_failure``); never after the last step (the output file follows).

    The state is consistent from the end of an optimizer step until the next training forward
    starts (a forward pre-hook on the model marks it dirty: BatchNorm statistics change in that
    forward). ``saved_step`` is the step of the checkpoint on disk (None: none written or resumed).
    """

    def __init__(self, save: Callable[[Trainer], None] | None, *, every: int | None, saved_step: int | None = None):
        self._save = save
        self.every = every
        self.dirty = False
        self.saved_step = saved_step
        self._handle: RemovableHandle | None = None

    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints at all (the main rank)."""
        return self._save is not None

    def save(self, trainer: Trainer) -> None:
        if self._save is not None:
            self._save(trainer)
            self.saved_step = trainer.step

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
        if self.every and trainer.step % self.every == 0 and trainer.step < trainer.total_steps:
            self.save(trainer)

    def on_epoch_end(self, trainer, metrics) -> None:
        if self.every is None and trainer.step < trainer.total_steps:
            self.save(trainer)

    def save_on_failure(self, trainer: Trainer, path: Path) -> str | None:
        """After a run stopped early: save the state when it is consistent and new, and return the
        checkpoint that holds this run's progress (None: nothing to resume from).

        A failure to write is logged, not raised: the caller reports the error that stopped the run.
        """
        if not self.writes:
            return None
        if trainer.step > 0 and not self.dirty:
            try:
                self.save(trainer)
            except Exception as exc:  # noqa: BLE001 - report the original error, not this one
                logger.warning("could not write checkpoint %s: %s", path, exc)
        return str(path) if path.is_file() and self.saved_step is not None else None
