"""The baselines a PEMN file is compared against: pruning and weight-only quantization, as files on disk.

A user who asks "is PEMN worth it on my model?" compares it with what they would otherwise do: train the
dense weights and store them in fp32, fp16 or int8, or prune them (the paper's baselines: magnitude and
random pruning) and store the sparse network. These are that comparison's other side, in the library so
that a user's own model gets them without copying code out of ``benchmarks/`` (which uses them for the
committed size/accuracy reports):

- ``Pruning``: a trainer callback that keeps every conv/linear weight at a fixed (random) or growing
  (magnitude, Zhu & Gupta 2017) sparsity;
- ``save_dense`` / ``save_int8`` / ``save_sparse``: safetensors files of a trained model (fp32 or fp16;
  int8 with one fp32 scale per output channel; a coded bitmap of the kept positions plus their fp16
  values), every other tensor fp16 in the compact ones; ``save_sparse_packed``: the same pruned network in
  three concatenated tensors with BatchNorm folded, the bytes a `.pemn` file spends on such content;
- ``load_artifact``: a fresh model holding what one of those files (or a ``.pemn`` file) stores.

    model = pemn.create_model("resnet20")
    pemn.Trainer(model, loader, None, config, callbacks=[Pruning(model, "magnitude", 0.96, seed=0)]).fit()
    save_sparse(model, "pruned.safetensors")
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import ConfigError
from .fileformat.codecs import MaskCoding, decode_mask, encode_mask
from .fileformat.q8 import Q8Entry, allot_outliers, dequantize, quantize
from .nn.topk import kept_count
from .surgery import maskable_layers
from .train import Callback, Trainer

__all__ = ["ARTIFACTS", "Pruning", "load_artifact", "save_dense", "save_int8", "save_sparse", "save_sparse_packed"]

PathLike = str | os.PathLike
ARTIFACTS = ("dense", "int8", "sparse", "sparse-packed", "pemn")  # what ``load_artifact`` reads


class Pruning(Callback):
    """Keeps every conv/linear weight of a dense model at a growing (magnitude) or fixed (random) sparsity.

    Random: one uniformly random mask per layer drawn before the first step (seeded by ``seed``).
    Magnitude: gradual magnitude pruning (Zhu & Gupta, 2017): sparsity ``s_t = s (1 - (1 - t / T)^3)``,
    ``T`` = 75% of the steps, the smallest ``|w|`` of each layer removed every ``T // 40`` steps. Pruned
    weights are zeroed after every optimizer step, so they stay zero whatever the optimizer's momentum
    does. Each layer keeps ``kept_count(1 - sparsity, n)`` weights, as a `.pemn` mask of that density.

    Args:
        model: the dense model the trainer trains (its conv/linear layers are pruned).
        how: "magnitude" or "random".
        sparsity: the fraction of each layer's weights removed at the end, in [0, 1).
        seed: the random masks' seed.
    """

    def __init__(self, model: nn.Module, how: str, sparsity: float, seed: int):
        if how not in ("magnitude", "random"):
            raise ConfigError(f"pruning must be 'magnitude' or 'random', found {how!r}")
        if not 0.0 <= sparsity < 1.0:
            raise ConfigError(f"sparsity must be in [0, 1), found {sparsity!r}")
        self.weights = [w for _, w in _weights(model)]  # the parameters themselves: trained in place
        self.how, self.sparsity, self.seed = how, sparsity, seed
        self.masks = [torch.ones_like(w, dtype=torch.bool) for w in self.weights]
        self.end, self.every = 1, 1

    def _set(self, sparsity: float, random: bool) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        for i, weight in enumerate(self.weights):
            w = weight.detach()
            keep = kept_count(1.0 - sparsity, w.numel())
            order = torch.randperm(w.numel(), generator=gen) if random else w.abs().flatten().argsort(descending=True)
            mask = torch.zeros(w.numel(), dtype=torch.bool)
            mask[order[:keep]] = True
            self.masks[i] = mask.view_as(w)

    @torch.no_grad()
    def _apply(self) -> None:
        for weight, mask in zip(self.weights, self.masks, strict=True):
            weight.mul_(mask)

    def on_fit_start(self, trainer: Trainer) -> None:
        self.end = max(1, int(0.75 * trainer.total_steps))
        self.every = max(1, self.end // 40)
        if self.how == "random":
            self._set(self.sparsity, random=True)
        self._apply()

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float, correct: int, size: int) -> None:
        step = trainer.step
        if self.how == "magnitude" and step <= self.end and (step % self.every == 0 or step == self.end):
            self._set(self.sparsity * (1.0 - (1.0 - step / self.end) ** 3), random=False)
        self._apply()


def _weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(state-dict key, weight parameter) of every conv/linear layer ``mask_`` would mask, in model order."""
    return [(f"{name}.weight", cast(torch.Tensor, m.weight)) for name, m in maskable_layers(model)]


def _leftovers(state: dict[str, torch.Tensor], skip: set[str]) -> dict[str, torch.Tensor]:
    """Every state-dict tensor not in ``skip``, floating ones as fp16; BatchNorm step counters dropped."""
    return {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in state.items()
        if k not in skip and not k.endswith("num_batches_tracked")
    }


def _split(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(conv/linear weights by state-dict key, every other tensor as ``_leftovers`` stores it)."""
    weights = {key: w.detach() for key, w in _weights(model)}
    return weights, _leftovers(model.state_dict(), set(weights))


def save_dense(model: nn.Module, path: PathLike, dtype: torch.dtype = torch.float32) -> None:
    """The whole state dict as safetensors, floating tensors in ``dtype`` (fp32: the reference size)."""
    save_file(
        {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()},
        str(path),
    )


def save_int8(model: nn.Module, path: PathLike) -> None:
    """Weight-only int8: each conv/linear weight ``w`` as ``<key>.int8 = round(w / scale)`` in [-127, 127]
    with ``<key>.scale`` = max ``|w|`` of its output channel / 127 (fp32); every other tensor fp16."""
    weights, tensors = _split(model)
    for key, w in weights.items():
        scale = w.abs().flatten(1).amax(dim=1).clamp_min(1e-12) / 127.0
        shape = (-1,) + (1,) * (w.ndim - 1)
        tensors[key + ".int8"] = torch.round(w / scale.view(shape)).clamp(-127, 127).to(torch.int8).contiguous()
        tensors[key + ".scale"] = scale.float().contiguous()
    save_file(tensors, str(path))


def save_sparse(model: nn.Module, path: PathLike) -> None:
    """A pruned model: each conv/linear weight as ``<key>.mask`` (its non-zero positions, coded as `.pemn`
    masks are: raw bits or Golomb-Rice, whichever is smaller; the coding in the ``masks`` metadata) and
    ``<key>.values`` (those weights in fp16, row-major order); every other tensor fp16."""
    weights, tensors = _split(model)
    index = {}
    for key, w in weights.items():
        mask = (w != 0).numpy().reshape(-1)
        coded = encode_mask(mask)
        tensors[key + ".mask"] = torch.from_numpy(np.ascontiguousarray(coded.data))
        tensors[key + ".values"] = w.reshape(-1)[torch.from_numpy(mask)].half().contiguous()
        index[key] = dataclasses.asdict(coded.coding)
    save_file(tensors, str(path), metadata={"masks": json.dumps(index, separators=(",", ":"))})


def save_sparse_packed(model: nn.Module, path: PathLike, rest_dtype: str = "float16") -> None:
    """A pruned model in the bytes a `.pemn` file would spend on the same content: three tensors and a small
    index, where ``save_sparse`` pays one safetensors entry per tensor and stores BatchNorm's four vectors.

    ``masks``: every conv/linear layer's coded mask (as ``save_sparse`` codes them), concatenated in model
    order; ``values``: their kept weights, fp16, in the same order; ``rest``: every other floating tensor of
    the state dict, fp16, in state-dict order, with each BatchNorm that tracks statistics folded to its eval
    transform ``x * scale + shift`` (its weight and bias; its running statistics not stored), as
    ``pemn compress`` stores BatchNorm. The metadata ``index`` holds each mask's coding and byte count; the
    loader takes names, shapes and order from the model it is given (``load_artifact(kind="sparse-packed")``).
    ``rest_dtype="int8"``: the rest as a version 3 `.pemn` file's int8 leftovers store theirs (``fileformat.q8``,
    the same outlier cap), in four more tensors ``rest.q8*``; ``rest`` then holds what q8 does not (fp16).
    """
    weights = {key: w.detach() for key, w in _weights(model)}
    masks, values, index = [], [], []
    for w in weights.values():
        mask = (w != 0).numpy().reshape(-1)
        coded = encode_mask(mask)
        masks.append(np.asarray(coded.data, dtype=np.uint8))
        values.append(w.reshape(-1)[torch.from_numpy(mask)].half())
        index.append([*dataclasses.astuple(coded.coding), int(masks[-1].size)])
    if rest_dtype not in ("float16", "int8"):
        raise ConfigError(f"rest_dtype must be float16 or int8, found {rest_dtype!r}")
    leftovers = [v.detach().float().reshape(-1) for v in _packed_rest(model, set(weights))[0].values()]
    as_q8: list[Q8Entry | None] = [None] * len(leftovers)
    if rest_dtype == "int8":
        allowed = allot_outliers([v.numpy() for v in leftovers])
        as_q8 = [quantize(v.numpy(), k) for v, k in zip(leftovers, allowed, strict=True)]
    rest = [v.half() for v, c in zip(leftovers, as_q8, strict=True) if c is None] or [torch.zeros(0).half()]
    tensors = {"masks": torch.from_numpy(np.concatenate(masks)), "values": torch.cat(values), "rest": torch.cat(rest)}
    if rest_dtype == "int8":
        from .export import _q8_tensors

        if q8 := [c for c in as_q8 if c is not None]:  # export's four q8 tensors, named rest.q8*
            tensors |= {"rest." + name.split(".", 1)[1]: torch.from_numpy(array.view(np.int16) if array.dtype ==
                        np.uint16 else array) for name, array in _q8_tensors(q8).items()}  # torch has no uint16
        index.append([c.index.size if c is not None else -1 for c in as_q8])  # per rest tensor: outliers, or fp16
    save_file(tensors, str(path), metadata={"index": json.dumps(index, separators=(",", ":"))})


def _packed_rest(model: nn.Module, weights: set[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """What ``save_sparse_packed`` stores in ``rest``, in state-dict order: every floating tensor but the
    conv/linear weights, each BatchNorm folded to scale and shift as ``pemn compress`` folds it (export's
    leftovers); and the folded BatchNorms' names."""
    from .export import _leftover_state

    state, folded = _leftover_state(model, fold_batchnorm=True)
    return {k: v for k, v in state.items() if k not in weights and v.is_floating_point()}, folded


def _load_sparse_packed(model: nn.Module, path: PathLike) -> dict[str, torch.Tensor]:
    """The state dict ``save_sparse_packed`` stored for ``model``'s architecture (BatchNorm left to unfold)."""
    from .api import _unfold_batchnorm

    with safe_open(str(path), "pt") as fh:
        index = json.loads(fh.metadata()["index"])
    stored = load_file(str(path))
    state = model.state_dict()
    weights = [key for key, _ in _weights(model)]
    out: dict[str, torch.Tensor] = {}
    masks, values = stored["masks"].numpy(), stored["values"].float()
    at = kept = 0
    for key, (codec, ones, rice_k, invert, nbytes) in zip(weights, index[: len(weights)], strict=True):
        mask = decode_mask(masks[at : at + nbytes], state[key].numel(), MaskCoding(codec, ones, rice_k, invert), key)
        at += nbytes
        w = torch.zeros(state[key].numel())
        count = int(mask.sum())
        w[torch.from_numpy(mask)] = values[kept : kept + count]
        kept += count
        out[key] = w.view_as(state[key])
    rest, at = stored["rest"].float(), 0
    shapes, folded = _packed_rest(model, set(weights))
    outliers = index[len(weights)] if "rest.q8" in stored else [-1] * len(shapes)  # per rest tensor (int8 rest)
    codes_at = entry = k_at = 0
    for (key, like), k in zip(shapes.items(), outliers, strict=True):
        if k < 0:
            out[key] = rest[at : at + like.numel()].view_as(like)
            at += like.numel()
            continue
        n = like.numel() - k
        lo, step = stored["rest.q8_range"].numpy()[2 * entry : 2 * entry + 2]
        flat = dequantize(stored["rest.q8"].numpy()[codes_at : codes_at + n], lo, step,
                          stored["rest.q8_index"].numpy()[k_at : k_at + k].view(np.uint16),
                          stored["rest.q8_value"].numpy()[k_at : k_at + k], like.numel())
        out[key] = torch.from_numpy(flat).view_as(like)
        codes_at, entry, k_at = codes_at + n, entry + 1, k_at + k
    _unfold_batchnorm(model, tuple(folded), out)
    return out


def load_artifact(kind: str, path: PathLike, make_model: Callable[[], nn.Module]) -> nn.Module:
    """A fresh model (from ``make_model()``) holding the weights stored in ``path``, fp32, in eval mode.

    Args:
        kind: how ``path`` was written: "dense" (``save_dense``), "int8", "sparse", or "pemn" (loaded with
            ``pemn_compress.load``; ``make_model`` is not called).
        path: the file.
        make_model: builds the architecture the file's weights belong to.
    """
    if kind not in ARTIFACTS:
        raise ConfigError(f"artifact kind must be one of {', '.join(ARTIFACTS)}, found {kind!r}")
    if kind == "pemn":
        from .api import load

        return load(path, device="cpu").eval()
    model = make_model()
    state = model.state_dict()
    if kind == "sparse-packed":
        stored = _load_sparse_packed(model, path)
    else:
        stored = load_file(str(path))
    if kind == "sparse":
        with safe_open(str(path), "pt") as fh:
            index = json.loads(fh.metadata()["masks"])
        for key, entry in index.items():
            mask = decode_mask(stored.pop(key + ".mask").numpy(), state[key].numel(), MaskCoding(**entry), key)
            w = torch.zeros(state[key].numel())
            w[torch.from_numpy(mask)] = stored.pop(key + ".values").float()
            stored[key] = w.view_as(state[key])
    elif kind == "int8":
        for key in [k[: -len(".int8")] for k in stored if k.endswith(".int8")]:
            q, scale = stored.pop(key + ".int8"), stored.pop(key + ".scale")
            stored[key] = q.float() * scale.view((-1,) + (1,) * (q.ndim - 1))
    for key, value in state.items():  # counters the compact formats do not store
        if key.endswith("num_batches_tracked"):
            stored.setdefault(key, value)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in stored.items()})
    return model.eval()
