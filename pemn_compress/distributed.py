"""Multi-process mask training on PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

Under ``torchrun --nproc_per_node N ...`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``), ``init`` joins the process group — gloo for CPU training,
nccl for CUDA, where each process takes the GPU of its ``LOCAL_RANK`` — and ``wrap`` puts the
masked model in ``DistributedDataParallel``. Each rank then trains on its shard of every batch
(``BatchLoader(rank=..., world_size=...)``); gradients are averaged by DDP, so every rank holds the
same scores after every step. Only the main rank (rank 0) evaluates for reports, draws progress
and writes files. Without those variables (or with ``WORLD_SIZE=1``) everything here is a no-op.

    ctx, device = distributed.init(device)
    try:
        model = distributed.wrap(model, ctx, device)
        ...
    finally:
        distributed.teardown(ctx)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["DistContext", "fixed_buffer_names", "init", "is_main", "launched", "sync_buffers", "teardown", "wrap"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" | "nccl" when distributed
    owns_group: bool = False  # init() created the process group, teardown() destroys it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be an integer, found {raw!r}") from exc


def launched() -> bool:
    """True when this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    return _env_int("WORLD_SIZE", 1) > 1


def init(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the torchrun process group if there is one; returns the context and this rank's device.

    On CUDA the device becomes ``cuda:LOCAL_RANK`` (one GPU per process). A process group that the
    caller already initialized is used as is (and left alone by ``teardown``).
    """
    if not launched():
        return DistContext(), device
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK must be in [0, WORLD_SIZE={world_size}), found {rank}")
    if not torch.distributed.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist = torch.distributed
    owns = False
    if dist.is_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise ConfigError(
                f"an initialized process group has rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"but the environment says rank {rank} of {world_size}"
            )
        backend = dist.get_backend()
    else:
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
        owns = True
    return DistContext(rank, world_size, local_rank, backend, owns), device


def teardown(ctx: DistContext) -> None:
    """Leave the process group if ``init`` created it, once every rank has finished its work.

    Every rank waits at a barrier first: rank 0 still evaluates and writes the file after training,
    and a rank that destroys its group and exits meanwhile dies at exit with ``terminate called
    without an active exception`` (SIGABRT), often on a busy machine. The cause: DistributedDataParallel
    keeps a C++ reference to the gloo process group (torch 2.13), so ``destroy_process_group`` leaves
    its worker and transport threads running, and the process then exits while they still serve the
    connection to a rank that is still at work. After the barrier no rank is at work, every
    connection is idle, and every rank exits 0. ``compress`` also frees the DistributedDataParallel
    wrapper (and collects its reference cycles) before calling this: otherwise its hold on the group
    can outlive ``destroy_process_group`` until interpreter shutdown, where the threads' destruction
    order is arbitrary and the same abort came back about once in ten runs on a loaded machine.
    """
    dist = torch.distributed
    if not (ctx.owns_group and dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


def is_main(ctx: DistContext | None = None) -> bool:
    """True on the rank that reports and writes files (rank 0, or a single process)."""
    if ctx is not None:
        return ctx.is_main
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def fixed_buffer_names(model: nn.Module) -> list[str]:
    """Buffers every rank regenerates identically from the seed (value banks, layer scales): DDP
    need not broadcast them, which would cost a model's worth of traffic per step."""
    from .nn.layers import MaskedLayer, ValueBank

    names = []
    for name, _ in model.named_buffers():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if isinstance(owner, ValueBank) or (isinstance(owner, MaskedLayer) and leaf == "_scale"):
            names.append(name)
    return names


def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Broadcast rank 0's buffers (BatchNorm statistics) to every rank: DDP syncs them before each
    forward, so after the last training forward each rank holds its own. A collective: every rank calls it."""
    if not ctx.enabled:
        return
    fixed = set(fixed_buffer_names(model))
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name not in fixed:
                torch.distributed.broadcast(buffer, src=0)


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when distributed, else ``model`` itself.

    Buffers such as BatchNorm statistics are broadcast from rank 0 before every forward, so every
    rank holds the same ones; the fixed PEMN buffers (``fixed_buffer_names``) are left out.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ignore = fixed_buffer_names(model)
    if ignore:
        # the documented (if underscored) way to keep buffers out of DDP's synchronisation
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    device_ids = [device.index] if device.type == "cuda" else None
    # buffers are synced before every forward by default (torch 2.13 deprecates naming broadcast_buffers)
    return DistributedDataParallel(model, device_ids=device_ids)
