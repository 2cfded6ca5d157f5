"""``pemn eval``: the accuracy of a `.pemn` file as ``pemn.load`` loads it, and what it says about a run.

``evaluate_file`` reproduces the accuracy recorded at compress time: same test split, the recorded
normalization and batch size. ``accuracy_warnings`` words what a compressed accuracy near chance,
or far below the dense input's, means for the user.

(The module is ``evaluation``, not ``evaluate``: a submodule of that name would replace the public
function ``pemn_compress.evaluate`` as an attribute of the package once imported.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .api import load, resolve_device
from .data import BatchLoader
from .errors import ChecksumError, ConfigError, DataError, TrustError, worded
from .fileformat.reader import read_pemn
from .inputs import check_data_fits, check_input_fits
from .sources import ArraySource, CheckedLoader, DataSource, resolve_data
from .train import evaluate
from .usercode import build_model, is_reference

__all__ = ["accuracy_warnings", "build_skeleton", "evaluate_file"]

NEAR_CHANCE_MARGIN = 0.10  # accuracy within 10 points of chance (1 / classes) gets a warning
DENSE_GAP_WARNING = 0.10  # so does accuracy more than 10 points below the dense input's
DEFAULT_EVAL_BATCH = 500  # files that record no evaluation batch size
_USUALLY_HELPS = (
    "what usually helps: more training images (--max-train-samples, or all of them), more --epochs"
)


def accuracy_warnings(accuracy: float | None, dense_accuracy: float | None, num_classes: int) -> list[str]:
    """Warnings for a compressed accuracy near chance, or far below the dense input's."""
    if accuracy is None:
        return []
    chance = 1.0 / max(num_classes, 1)
    if accuracy < chance + NEAR_CHANCE_MARGIN:
        return [f"accuracy {accuracy:.4f} is near chance ({chance:.2f} for {num_classes} classes): the masks learned "
                f"little; {_USUALLY_HELPS}"]
    if dense_accuracy is not None and dense_accuracy - accuracy > DENSE_GAP_WARNING:
        return [f"accuracy {accuracy:.4f} is {100 * (dense_accuracy - accuracy):.1f} points below the dense input's "
                f"{dense_accuracy:.4f}; {_USUALLY_HELPS}, --density 0.3..0.7"]
    return []


def build_skeleton(arch: str, arch_kwargs: dict, recorded: dict | None = None) -> nn.Module:
    """The model a user names to load a file into: a zoo name or ``module:function`` /
    ``module:Class``. When ``arch`` is the architecture the file records (``recorded``), its recorded
    keyword arguments come first, then ``arch_kwargs`` override them."""
    kwargs = _recorded_kwargs(arch, recorded)
    if is_reference(arch):
        return build_model(arch, kwargs | arch_kwargs)
    from .models import create_model

    return create_model(arch, **(kwargs | arch_kwargs))


def _recorded_kwargs(arch: str, recorded: dict | None) -> dict:
    """The keyword arguments the file records for ``arch`` ({} when it records another architecture,
    or none, or something that is not a dict: files are untrusted)."""
    if not isinstance(recorded, dict):
        return {}
    kind = recorded.get("kind")
    same = ((kind == "registry" and recorded.get("name") == arch)
            or (kind == "import" and is_reference(arch) and recorded.get("target") == arch))
    kwargs = recorded.get("kwargs") if same else None
    return dict(kwargs) if isinstance(kwargs, dict) else {}


def _recorded(provenance: dict, key: str) -> dict:
    """A dict the file's provenance records under ``key`` ({} when absent or not a dict: files are untrusted)."""
    value = provenance.get(key)
    return value if isinstance(value, dict) else {}


def _data_spec(provenance: dict, data: str | None, trust_code: bool) -> str:
    """The data set to evaluate on: ``data``, else the one the file records, else fashion-mnist."""
    recorded = provenance.get("dataset") if isinstance(provenance.get("dataset"), str) else None
    if data is None and recorded and is_reference(recorded) and not trust_code:
        # a data hook named by the file would import and run code chosen by whoever wrote the file
        raise worded(
            TrustError,
            f"the file's data set {recorded!r} is a module:function hook, which runs code; "
            "pass the data set explicitly (--data), or --trust-code if you trust the file",
        )
    return data or recorded or "fashion-mnist"


def _normalization(provenance: dict, in_chans: int, default: tuple) -> tuple:
    """(mean, std) recorded at compress time, else ``default`` (the data set's own)."""
    norm = _recorded(provenance, "normalization")
    mean, std = norm.get("mean"), norm.get("std")
    if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == in_chans:
        return mean, std
    return default


def _test_loader(source: DataSource, model: nn.Module, provenance: dict, batch: int, device: torch.device) -> Any:
    """The test split as the file was measured: arrays normalized with the recorded mean/std; torch data as
    the user's pipeline gives it (a data hook returning ``(train, test)``)."""
    if isinstance(source, ArraySource):
        dataset = source.data
        check_data_fits(model, dataset, device)
        mean, std = _normalization(provenance, dataset.in_chans, (dataset.mean, dataset.std))
        return BatchLoader.from_dataset(dataset, "test", batch_size=batch, mean=mean, std=std, device=device)
    outputs = check_input_fits(model, source.probe(), name=source.name, num_classes=source.num_classes, device=device)
    loader = source.test_loader(batch_size=batch, device=device)
    if loader is None:
        raise DataError(f"data hook {source.name} returned no test data: return (train, test)")
    return CheckedLoader(loader, what="test data", sample_shape=source.sample_shape, num_outputs=outputs)


def evaluate_file(
    path: str | os.PathLike,
    data: str | None = None,
    device: str | torch.device | None = "auto",
    batch_size: int | None = None,
    *,
    data_root: str | os.PathLike | None = None,
    trust_code: bool = False,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
) -> dict:
    """Accuracy of a `.pemn` file over a data set's test split, as ``pemn.load`` loads it.

    ``arch`` (with ``arch_kwargs``) names the architecture to load the file into: a zoo name or a
    ``module:function`` / ``module:Class`` of the caller's code (the caller's own choice: it is run
    without ``trust_code``); needed for files that record no architecture.
    ``data`` defaults to the data set recorded in the file (else fashion-mnist), and then so does
    ``data_root``; a recorded ``module:function`` data hook is followed only with ``trust_code``.
    Images are normalized with the mean/std recorded at compress time and evaluated with the
    recorded batch size, so the result reproduces the file's recorded accuracy.

    Returns ``{file, dataset, samples, accuracy, loss, recorded_accuracy, dense_accuracy, device,
    batch_size, seconds}``.
    """
    started = time.perf_counter()
    path = Path(path)
    blob = path.read_bytes()
    pf = read_pemn(blob, name=str(path))
    provenance = pf.header.get("provenance") or {}
    spec = _data_spec(provenance, data, trust_code)
    if data_root is None and data is None:
        root = _recorded(provenance, "recipe").get("data_root")
        data_root = root if isinstance(root, str) else None
    task = provenance.get("task")
    if isinstance(task, dict):  # a custom loss/metric: functions of the user's, not recorded as code
        raise worded(ConfigError, f"the file was trained for your own objective (metric {task.get('metric')!r}): "
                                  "measure it in Python with pemn.evaluate(model, loader, loss=..., metric=...)")
    root = None if data_root is None else os.fspath(data_root)
    source = resolve_data(None, None, spec=spec, root=root, max_train_samples=None, seed=0)
    target = resolve_device(device)
    skeleton = build_skeleton(arch, arch_kwargs or {}, pf.header.get("architecture")) if arch else None
    try:
        model = load(blob, device=target, trust_code=trust_code, model=skeleton)
    except ChecksumError as exc:  # the weights' fingerprint: load read bytes, so name the file they came from
        raise ChecksumError(f"{path}: {exc}") from exc
    recorded_batch = _recorded(provenance, "evaluation").get("batch_size")
    if not (isinstance(recorded_batch, int) and recorded_batch > 0):
        recorded_batch = DEFAULT_EVAL_BATCH
    batch = batch_size or recorded_batch
    loader = _test_loader(source, model, provenance, batch, target)
    loss, accuracy = evaluate(model, loader, target, amp=False)
    return {
        "file": str(path),
        "dataset": spec,
        "samples": source.num_test,
        "accuracy": accuracy,
        "loss": loss,
        "recorded_accuracy": provenance.get("accuracy"),
        "dense_accuracy": provenance.get("dense_accuracy"),
        "device": str(target),
        "batch_size": batch,
        "seconds": time.perf_counter() - started,
    }
