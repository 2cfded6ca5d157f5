"""pemn-compress: tiny `.pemn` models from binary masks over fixed pseudo-random weights.

    import pemn_compress as pemn
    result = pemn.compress(model, train_loader, test=test_loader, output="model.pemn")  # the CLI's recipe
    deployed = pemn.load("model.pemn", device="auto")

or, piece by piece: ``pemn.mask_(model, pemn.MaskConfig(...))``, train the scores (``pemn.Trainer``),
``pemn.save(model, "model.pemn")``.

Torch-dependent names are imported on first use, so ``import pemn_compress`` and the file reader
stay usable (and quick) without touching torch.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .config import MaskConfig
from .errors import (
    CheckpointError,
    ChecksumError,
    ConfigError,
    ContainerError,
    DataError,
    DataNotFoundError,
    FormatError,
    HeaderError,
    LimitError,
    MissingKeyError,
    ModelError,
    PemnError,
    ShapeError,
    TrustError,
    UnknownModelError,
    UserCodeError,
    VersionError,
)

# public name -> module that defines it (imported lazily)
_LAZY = {
    "Callback": ".train",
    "CompressOptions": ".options",
    "CompressResult": ".options",
    "Metric": ".tasks",
    "TrainingFailed": ".interrupt",
    "TrainingInterrupted": ".interrupt",
    "compress": ".pipeline",
    "TrainConfig": ".train",
    "Trainer": ".train",
    "create_model": ".models",
    "evaluate": ".train",
    "get_dataset": ".data",
    "input_transform": ".deploy",
    "list_models": ".models",
    "load": ".api",
    "mask_": ".surgery",
    "masked_layers": ".surgery",
    "materialize": ".surgery",
    "read_pemn": ".fileformat.reader",
    "register_model": ".models",
    "save": ".api",
}

__all__ = [
    "CheckpointError",
    "ChecksumError",
    "ConfigError",
    "ContainerError",
    "DataError",
    "DataNotFoundError",
    "FormatError",
    "HeaderError",
    "LimitError",
    "MaskConfig",
    "MissingKeyError",
    "ModelError",
    "PemnError",
    "ShapeError",
    "TrustError",
    "UnknownModelError",
    "UserCodeError",
    "VersionError",
    "__version__",
]
__all__ = sorted(__all__ + list(_LAZY))  # one sorted list: eager names above, lazily imported ones from _LAZY


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pemn_compress' has no attribute {name!r}")


def __dir__():
    return __all__
