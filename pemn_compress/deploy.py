"""What deployment code needs besides the weights: the input transform a model was trained with.

``pemn compress`` records in the file (``provenance.normalization``) the per-channel ``mean`` and
``std`` of the training images, in the units of the raw images (0..255 for uint8 data), and the image
shape ``(C, H, W)``. A deployed model expects its inputs normalized the same way::

    import pemn_compress as pemn
    model = pemn.load("model.pemn", device="cpu")
    to_input = pemn.input_transform(model)          # or pemn.input_transform("model.pemn")
    logits = model(to_input(images_uint8))          # images (N, H, W) or (N, C, H, W), 0..255

The transform computes ``(float32(x) - mean) * (1 / std)`` per channel, the same float32 operations
``pemn compress`` and ``pemn eval`` use, so accuracy measured through it equals theirs.

A model compressed from the user's own torch data was fed inputs their pipeline normalized: the file
records ``normalization = {"applied_by": "user"}``, and the transform says so (``applied_by == "user"``)
and refuses to guess: apply your pipeline's transform instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, HeaderError

__all__ = ["InputTransform", "input_transform"]


@dataclass(frozen=True)
class InputTransform:
    """Maps raw images to a model's input: ``(float32(x) - mean) * (1 / std)`` per channel."""

    mean: tuple[float, ...]  # per channel, in raw image units (0..255 for uint8 images)
    std: tuple[float, ...]
    image_shape: tuple[int, ...] | None = None  # (C, H, W) the model was trained on, when recorded
    applied_by: str = "pemn"  # pemn: this transform is the one training used; user: the user's own pipeline

    def __call__(self, images: Any, device: Any = None) -> Any:
        """``images``: uint8 or float, ``(N, H, W)`` (one channel), ``(N, C, H, W)`` or one image
        ``(H, W)``/``(C, H, W)``; numpy array or tensor. Returns a float32 tensor ``(N, C, H, W)``."""
        import torch

        if self.applied_by == "user":
            raise ConfigError("this model was trained on inputs your own pipeline normalized (the file records "
                              "normalization applied_by 'user'): apply that transform to the images yourself")
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(_as_array(images))
        channels = len(self.mean)
        if x.ndim == 2 or (x.ndim == 3 and channels > 1 and x.shape[0] == channels):
            x = x.unsqueeze(0)  # one image
        if x.ndim == 3:
            x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        if x.ndim != 4 or x.shape[1] != channels:
            raise ConfigError(
                f"images must be (N, H, W) or (N, {channels}, H, W), found shape {tuple(images.shape)}"
            )
        if self.image_shape is not None and tuple(x.shape[1:]) != tuple(self.image_shape):
            trained, found = tuple(self.image_shape), tuple(x.shape[1:])
            raise ConfigError(f"the model was trained on images of shape {trained} (C, H, W), found {found}")
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, channels, 1, 1)
        inv = torch.tensor([1.0 / s if s > 0 else 1.0 for s in self.std], dtype=torch.float32, device=x.device)
        out = x.to(torch.float32).sub(mean).mul_(inv.view(1, channels, 1, 1))  # (N, C, H, W)
        return out if device is None else out.to(device)


def _as_array(images: Any) -> Any:
    import numpy as np

    return np.require(np.asarray(images), requirements=["C", "W"])  # torch needs a writable array


def input_transform(model_or_path: Any) -> InputTransform:
    """The input transform recorded in a `.pemn` file: pass the file's path (or bytes), or a model
    returned by ``pemn.load`` (which keeps the file's header)."""
    header = getattr(model_or_path, "pemn_file_header", None)
    if header is None:
        if not isinstance(model_or_path, (str, bytes, os.PathLike)):
            found = type(model_or_path).__name__
            raise ConfigError(f"input_transform takes a .pemn path or a model returned by pemn.load, found {found}")
        from .fileformat.reader import read_pemn

        header = read_pemn(model_or_path).header
    provenance = header.get("provenance") if isinstance(header, dict) else None
    provenance = provenance if isinstance(provenance, dict) else {}
    norm = provenance.get("normalization")
    shape = provenance.get("image_shape")
    if isinstance(norm, dict) and norm.get("applied_by") == "user":
        recorded = tuple(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else None
        return InputTransform((), (), recorded, applied_by="user")
    mean = norm.get("mean") if isinstance(norm, dict) else None
    std = norm.get("std") if isinstance(norm, dict) else None
    if not (isinstance(mean, list) and isinstance(std, list) and mean and len(mean) == len(std)
            and all(isinstance(v, (int, float)) for v in mean + std)):
        raise HeaderError(
            "the file records no input normalization (provenance.normalization with mean and std): it was not "
            "written by pemn compress; normalize inputs the way the model was trained"
        )
    image_shape = tuple(shape) if isinstance(shape, list) and len(shape) == 3 and len(mean) == shape[0] else None
    return InputTransform(tuple(float(v) for v in mean), tuple(float(v) for v in std), image_shape)
